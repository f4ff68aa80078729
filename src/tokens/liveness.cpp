#include "preloadrun/tokens/liveness.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun::tokens {

namespace {

struct flock whole_file(short type) {
    struct flock lock {};
    lock.l_type = type;
    lock.l_whence = SEEK_SET;
    lock.l_start = 0;
    lock.l_len = 0;
    lock.l_pid = 0; // required for OFD locks
    return lock;
}

std::string owner_text(const TokensFile& file) {
    return "preloadrun pid " + std::to_string(file.owner.process.pid);
}

} // namespace

std::filesystem::path lock_path_for(const std::filesystem::path& tokens_file) {
    auto lock = tokens_file;
    lock += ".lock";
    return lock;
}

std::string lock_name_for(std::string_view tokens_file_name) {
    return std::string(tokens_file_name) + ".lock";
}

std::string_view to_string(Status status) noexcept {
    switch (status) {
    case Status::live:
        return "live";
    case Status::missing:
        return "missing";
    case Status::corrupt:
        return "corrupt";
    case Status::owner_dead:
        return "owner dead";
    case Status::rebooted:
        return "rebooted since";
    case Status::other_host:
        return "other host";
    }
    return "unknown";
}

Liveness check(const std::filesystem::path& tokens_file) {
    auto parent = tokens_file.parent_path();
    Dir dir;
    try {
        dir = Dir::open(parent.empty() ? std::filesystem::path(".") : parent, Dir::LastLink::follow,
                        Dir::Access::lookup);
    } catch (const Error& e) {
        Liveness result;
        result.status = e.code() == ErrorCode::not_found ? Status::missing : Status::corrupt;
        result.reason = tokens_file.string() + ": " + e.what();
        return result;
    }
    return check(dir, tokens_file.filename().string());
}

Liveness check(const Dir& dir, std::string_view name) {
    const auto tokens_file = dir / name;
    Liveness result;
    std::string text;
    try {
        text = dir.read_text(name, kMaxFileSize);
    } catch (const Error& e) {
        result.status = e.code() == ErrorCode::not_found ? Status::missing : Status::corrupt;
        result.reason = e.what();
        return result;
    }
    try {
        result.file = decode(text);
    } catch (const Error& e) {
        result.status = Status::corrupt;
        result.reason = tokens_file.string() + ": " + e.what();
        return result;
    }
    const auto& file = *result.file;
    const auto& owner = file.owner.process;
    if (owner.hostname != current_hostname()) {
        result.status = Status::other_host;
        result.reason = "written by " + owner_text(file) + " on host " + owner.hostname +
                        ", not on this host (" + current_hostname() + ")";
        return result;
    }
    if (owner.boot_id != current_boot_id()) {
        result.status = Status::rebooted;
        result.reason = "written by " + owner_text(file) + " before this machine rebooted";
        return result;
    }
    const auto lock_path = lock_path_for(tokens_file);
    Fd lock_fd = dir.open_entry(lock_name_for(name), O_RDONLY);
    if (!lock_fd) {
        result.status = Status::owner_dead;
        result.reason = owner_text(file) + " is gone (its lock file " + lock_path.string() +
                        " cannot be opened: " + std::strerror(errno) + ")";
        return result;
    }
    auto probe = whole_file(F_WRLCK);
    if (::fcntl(lock_fd.get(), F_OFD_GETLK, &probe) != 0) {
        result.status = Status::owner_dead;
        result.reason =
            "cannot test the lock on " + lock_path.string() + ": " + std::strerror(errno);
        return result;
    }
    if (probe.l_type == F_UNLCK) {
        result.status = Status::owner_dead;
        result.reason = owner_text(file) + " is gone (it no longer holds its lock)";
        return result;
    }
    // The lock is held. The pid may be in another pid namespace: only a
    // visible pid with another start time proves the recorded owner is gone.
    auto start = process_start_time(owner.pid);
    if (start && *start != owner.start_time) {
        result.status = Status::owner_dead;
        result.reason = owner_text(file) + " is gone (that pid is now another process)";
        return result;
    }
    result.status = Status::live;
    result.reason = "owned by live " + owner_text(file);
    return result;
}

OwnerLock OwnerLock::acquire(const std::filesystem::path& lock_path) {
    auto parent = lock_path.parent_path();
    return acquire(
        Dir::open(parent.empty() ? std::filesystem::path(".") : parent, Dir::LastLink::follow),
        lock_path.filename().string());
}

OwnerLock OwnerLock::acquire(const Dir& dir, const std::string& name) {
    const auto lock_path = (dir / name).string();
    // The lock file may be unlinked by its previous owner between our open and
    // our lock: then the lock we got is on a dead inode. Check and retry.
    for (int attempt = 0; attempt < 10; ++attempt) {
        Fd fd = dir.open_entry(name, O_RDWR | O_CREAT, 0600);
        if (!fd) {
            if (errno == ELOOP) {
                throw Error(ErrorCode::permission, lock_path + ": is a symbolic link, refused");
            }
            throw_errno("cannot open lock file " + lock_path);
        }
        auto lock = whole_file(F_WRLCK);
        if (::fcntl(fd.get(), F_OFD_SETLK, &lock) != 0) {
            if (errno == EAGAIN || errno == EACCES) {
                throw Error(ErrorCode::already_exists,
                            lock_path + " is locked by another live process");
            }
            throw_errno("cannot lock " + lock_path);
        }
        struct stat by_fd {};
        if (::fstat(fd.get(), &by_fd) != 0) {
            throw_errno("cannot stat lock file " + lock_path);
        }
        const auto by_name = dir.stat_entry(name);
        if (by_name && by_name->st_ino == by_fd.st_ino && by_name->st_dev == by_fd.st_dev) {
            if (by_fd.st_uid != ::geteuid()) {
                throw Error(ErrorCode::permission, lock_path + ": owned by uid " +
                                                       std::to_string(by_fd.st_uid) +
                                                       ", not by this user");
            }
            return OwnerLock(dir.duplicate(), name, std::move(fd));
        }
    }
    throw Error(ErrorCode::io, "cannot lock " + lock_path + ": it keeps being replaced");
}

void OwnerLock::release_and_remove() noexcept {
    if (fd_) {
        try {
            dir_.remove(name_);
        } catch (const Error&) {
            // Released below all the same; a lock file left unlocked is stale.
        }
        fd_.reset();
    }
}

} // namespace preloadrun::tokens
