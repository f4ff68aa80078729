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
    Liveness result;
    std::string text;
    try {
        text = read_text_file(tokens_file, kMaxFileSize);
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
    auto lock_path = lock_path_for(tokens_file);
    Fd lock_fd(::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
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
    // The lock file may be unlinked by its previous owner between our open and
    // our lock: then the lock we got is on a dead inode. Check and retry.
    for (int attempt = 0; attempt < 10; ++attempt) {
        Fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) {
            if (errno == ELOOP) {
                throw Error(ErrorCode::permission,
                            lock_path.string() + ": is a symbolic link, refused");
            }
            throw_errno("cannot open lock file " + lock_path.string());
        }
        auto lock = whole_file(F_WRLCK);
        if (::fcntl(fd.get(), F_OFD_SETLK, &lock) != 0) {
            if (errno == EAGAIN || errno == EACCES) {
                throw Error(ErrorCode::already_exists,
                            lock_path.string() + " is locked by another live process");
            }
            throw_errno("cannot lock " + lock_path.string());
        }
        struct stat by_fd {};
        struct stat by_path {};
        if (::fstat(fd.get(), &by_fd) != 0) {
            throw_errno("cannot stat lock file " + lock_path.string());
        }
        if (::lstat(lock_path.c_str(), &by_path) == 0 && by_path.st_ino == by_fd.st_ino &&
            by_path.st_dev == by_fd.st_dev) {
            if (by_fd.st_uid != ::geteuid()) {
                throw Error(ErrorCode::permission, lock_path.string() + ": owned by uid " +
                                                       std::to_string(by_fd.st_uid) +
                                                       ", not by this user");
            }
            return OwnerLock(lock_path, std::move(fd));
        }
    }
    throw Error(ErrorCode::io, "cannot lock " + lock_path.string() + ": it keeps being replaced");
}

void OwnerLock::release_and_remove() noexcept {
    if (fd_) {
        ::unlink(path_.c_str());
        fd_.reset();
    }
}

} // namespace preloadrun::tokens
