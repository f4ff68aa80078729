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

namespace preloadrun::tokens {

std::filesystem::path lock_path_for(const std::filesystem::path& tokens_file);
// NAME.lock, the lock file's name next to a tokens file NAME.
std::string lock_name_for(std::string_view tokens_file_name);

enum class Status { live, missing, corrupt, owner_dead, rebooted, other_host };
std::string_view to_string(Status status) noexcept;

struct Liveness {
    Status status = Status::missing;
    std::string reason;             // one line, for people: why it is not live
    std::optional<TokensFile> file; // when it could be read and decoded
};

// Never throws for a missing, unreadable or corrupt file: that is its answer.
Liveness check(const std::filesystem::path& tokens_file);
// The same for the entry `name` of a directory already open.
Liveness check(const Dir& dir, std::string_view name);

// The owner's side: an exclusive OFD lock on the lock file, held until
// release() or destruction.
class OwnerLock {
public:
    OwnerLock() = default;
    // Creates the lock file `name` in `dir` (mode 0600, O_CLOEXEC) if needed
    // and locks it. Throws Error(already_exists) when another process holds
    // it, Error(permission) for a symlink or another user's file.
    static OwnerLock acquire(const Dir& dir, const std::string& name);
    static OwnerLock acquire(const std::filesystem::path& lock_path);
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
