#include "preloadrun/tokens/liveness.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

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

// Once the lock is held: mode 0600, or 0640 and `group`. A new lock file is
// opened to the group only once it is held, so no reader can lock it first.
void share_with(int fd, const std::string& lock_path, gid_t group) {
    const bool shared = group != static_cast<gid_t>(-1);
    if (shared && ::fchown(fd, static_cast<uid_t>(-1), group) != 0) {
        throw_errno("cannot set the group of lock file " + lock_path);
    }
    if (::fchmod(fd, shared ? 0640 : 0600) != 0) {
        throw_errno("cannot set the mode of lock file " + lock_path);
    }
}

constexpr const char* share_hint = "; its owner shares it with a group by preloadrun --group";

Liveness not_live(Status status, std::string reason) {
    Liveness result;
    result.status = status;
    result.reason = std::move(reason);
    return result;
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// " (mode 0600, uid 0, gid 0)" of an entry, for a message about access to it.
std::string access_text(const Dir& dir, std::string_view name) {
    try {
        if (auto st = dir.stat_entry(name)) {
            return " (mode " + mode_text(st->st_mode) + ", uid " + std::to_string(st->st_uid) +
                   ", gid " + std::to_string(st->st_gid) + ")";
        }
    } catch (const Error&) {
        // Only for the message.
    }
    return "";
}

// Why a tokens file must not be used although it can be read: it or its
// directory is writable by group or others, who could rewrite the handles in
// it or replace it (preloadrun refuses to publish in such a place).
std::optional<std::string> unsafe_reason(const Dir& dir, const struct stat& file,
                                         const std::filesystem::path& tokens_file) {
    if ((file.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        return tokens_file.string() + " is writable by " +
               ((file.st_mode & S_IWOTH) != 0 ? "others" : "its group") + " (mode " +
               mode_text(file.st_mode) +
               "), who could change the handles in it; preloadrun never writes it so: refused";
    }
    struct stat parent {};
    if (::fstat(dir.fd(), &parent) == 0 && (parent.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        return tokens_file.string() + ": its directory " + dir.path().string() +
               " is writable by group or others (mode " + mode_text(parent.st_mode) +
               "), who could replace the file; preloadrun refuses such a directory: refused";
    }
    return std::nullopt;
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
    case Status::unsafe:
        return "unsafe";
    case Status::owner_dead:
        return "owner dead";
    case Status::rebooted:
        return "rebooted since";
    case Status::other_host:
        return "other host";
    case Status::unknown:
        return "cannot check";
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
        result.status = e.code() == ErrorCode::not_found ? Status::missing : Status::unknown;
        result.reason = tokens_file.string() + ": " + e.what();
        return result;
    }
    return check(dir, tokens_file.filename().string());
}

namespace {

// The rest of check() for a tokens file read and decoded into `result`: is
// its owner alive on this host, since this boot, holding its lock?
Liveness owner_liveness(const Dir& dir, std::string_view name, Liveness result) {
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
    const auto lock_name = lock_name_for(name);
    const auto lock_path = (dir / lock_name).string();
    Fd lock_fd = dir.open_entry(lock_name, O_RDONLY);
    if (!lock_fd) {
        const int err = errno;
        if (err == ENOENT) {
            result.status = Status::owner_dead;
            result.reason =
                owner_text(file) + " is gone (its lock file " + lock_path + " no longer exists)";
            return result;
        }
        // Not being allowed to look is no sign of death.
        result.status = Status::unknown;
        result.reason = "cannot tell whether " + owner_text(file) + " lives: its lock file " +
                        lock_path + " cannot be opened: " + std::strerror(err);
        if (err == EACCES || err == EPERM) {
            result.reason += " for this user (uid " + std::to_string(::geteuid()) + ")" +
                             access_text(dir, lock_name) + share_hint;
        }
        return result;
    }
    auto probe = whole_file(F_WRLCK);
    if (::fcntl(lock_fd.get(), F_OFD_GETLK, &probe) != 0) {
        result.status = Status::unknown;
        result.reason = "cannot tell whether " + owner_text(file) +
                        " lives: cannot test the lock on " + lock_path + ": " +
                        std::strerror(errno);
        return result;
    }
    if (probe.l_type == F_UNLCK) {
        result.status = Status::owner_dead;
        result.reason = owner_text(file) + " is gone (it no longer holds its lock)";
        return result;
    }
    if (probe.l_type == F_RDLCK) {
        // Owners take write locks only: a read lock is a reader's, taken
        // after the owner was gone (it could not be taken before).
        result.status = Status::owner_dead;
        result.reason = owner_text(file) +
                        " is gone (its lock file is read-locked by another process, not by a "
                        "preloadrun)";
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

} // namespace

Liveness check(const Dir& dir, std::string_view name) {
    const auto tokens_file = dir / name;
    Liveness result;
    Fd fd = dir.open_entry(name, O_RDONLY | O_NONBLOCK);
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) {
            return not_live(Status::missing, tokens_file.string() + ": no such file");
        }
        if (err == ELOOP) {
            return not_live(Status::unsafe, tokens_file.string() +
                                                ": is a symbolic link, which preloadrun never "
                                                "publishes; refused");
        }
        if (err == EACCES || err == EPERM) {
            return not_live(Status::unknown, tokens_file.string() + ": " + std::strerror(err) +
                                                 ": this user (uid " + std::to_string(::geteuid()) +
                                                 ") cannot read it" + access_text(dir, name) +
                                                 share_hint);
        }
        return not_live(Status::unknown,
                        "cannot open " + tokens_file.string() + ": " + std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        return not_live(Status::unknown,
                        "cannot stat " + tokens_file.string() + ": " + std::strerror(errno));
    }
    if (!S_ISREG(st.st_mode)) {
        return not_live(Status::corrupt, tokens_file.string() + ": not a regular file");
    }
    if (auto unsafe = unsafe_reason(dir, st, tokens_file)) {
        return not_live(Status::unsafe, *unsafe);
    }
    result.file_uid = st.st_uid;
    std::string text;
    try {
        auto bytes = read_open_file(fd.get(), tokens_file, kMaxFileSize);
        text.assign(bytes.begin(), bytes.end());
    } catch (const Error& e) {
        // Too large: not a tokens file. A read that failed: no answer.
        return not_live(e.code() == ErrorCode::limit ? Status::corrupt : Status::unknown, e.what());
    }
    try {
        result.file = decode(text);
    } catch (const Error& e) {
        return not_live(Status::corrupt, tokens_file.string() + ": " + e.what());
    }
    return owner_liveness(dir, name, std::move(result));
}

OwnerLock OwnerLock::acquire(const std::filesystem::path& lock_path, gid_t group) {
    auto parent = lock_path.parent_path();
    return acquire(
        Dir::open(parent.empty() ? std::filesystem::path(".") : parent, Dir::LastLink::follow),
        lock_path.filename().string(), group);
}

OwnerLock OwnerLock::acquire(const Dir& dir, const std::string& name, gid_t group) {
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
                auto holder = whole_file(F_WRLCK);
                if (::fcntl(fd.get(), F_OFD_GETLK, &holder) == 0 && holder.l_type == F_RDLCK) {
                    // Owners take write locks only: a reader that may open
                    // the file (its group) took this one after its owner died.
                    throw Error(ErrorCode::conflict,
                                lock_path +
                                    " is read-locked by a process that is not a preloadrun (a "
                                    "reader in the file's group?); no preloadrun owns it: stop "
                                    "that process or remove the lock file");
                }
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
            share_with(fd.get(), lock_path, group);
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
