#pragma once
// Whether a tokens file belongs to a live preload process. The owner holds an
// exclusive OFD lock on the companion lock file (PATH.lock) for its whole
// life, on a descriptor that no child inherits; a reader tests that lock
// without taking it. The pid in the file is for messages, never the proof.

#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/tokens/tokens_file.hpp"

#include <filesystem>
#include <optional>
#include <string>
#include <sys/types.h>

namespace preloadrun::tokens {

std::filesystem::path lock_path_for(const std::filesystem::path& tokens_file);
// NAME.lock, the lock file's name next to a tokens file NAME.
std::string lock_name_for(std::string_view tokens_file_name);

// `unsafe`: the file or its directory is writable by group or others, or the
// file is a symbolic link: a location preloadrun refuses to publish in.
// `unknown`: this process may not read the file or its lock (or reading them
// failed): nothing can be said about the owner. Never taken for `owner_dead`.
enum class Status { live, missing, corrupt, unsafe, owner_dead, rebooted, other_host, unknown };
std::string_view to_string(Status status) noexcept;

struct Liveness {
    Status status = Status::missing;
    std::string reason;             // one line, for people: why it is not live
    std::optional<TokensFile> file; // when it could be read and decoded
    // The file's owner: who published it, and the user the HSM objects it
    // names belong to. Set once the file passed the safety checks.
    std::optional<uid_t> file_uid;
};

// Never throws for a missing, unreadable, unsafe or corrupt file: that is its
// answer.
Liveness check(const std::filesystem::path& tokens_file);
// The same for the entry `name` of a directory already open.
Liveness check(const Dir& dir, std::string_view name);

// The owner's side: an exclusive OFD lock on the lock file, held until
// release() or destruction.
class OwnerLock {
public:
    OwnerLock() = default;
    // Creates the lock file `name` in `dir` (O_CLOEXEC) if needed and locks
    // it; once locked, the file gets mode 0600, or mode 0640 and `group`
    // when a group is given (so that readers in that group can test the
    // lock: they can take only a read lock, never while the owner lives,
    // and cannot write the file). Throws Error(already_exists) when another
    // owner holds it, Error(conflict) when a reader holds a read lock on it
    // (no owner does), Error(permission) for a symlink or another user's
    // file.
    static OwnerLock acquire(const Dir& dir, const std::string& name,
                             gid_t group = static_cast<gid_t>(-1));
    static OwnerLock acquire(const std::filesystem::path& lock_path,
                             gid_t group = static_cast<gid_t>(-1));
    OwnerLock(OwnerLock&&) noexcept = default;
    OwnerLock& operator=(OwnerLock&&) noexcept = default;
    ~OwnerLock() = default;

    bool held() const noexcept { return static_cast<bool>(fd_); }
    int fd() const noexcept { return fd_.get(); }
    // Removes the lock file, then releases the lock.
    void release_and_remove() noexcept;

private:
    OwnerLock(Dir dir, std::string name, Fd fd)
        : dir_(std::move(dir)), name_(std::move(name)), fd_(std::move(fd)) {}
    Dir dir_;
    std::string name_;
    Fd fd_;
};

} // namespace preloadrun::tokens
