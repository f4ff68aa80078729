#pragma once
// The owner's side of a tokens file: takes the path (refusing one held by a
// live owner, taking over a stale one), publishes each version atomically,
// and removes the file and its lock at the end.

#include "preloadrun/tokens/liveness.hpp"
#include "preloadrun/tokens/tokens_file.hpp"

#include <filesystem>
#include <optional>
#include <sys/types.h>

namespace preloadrun::tokens {

struct PublisherOptions {
    // -1: mode 0600. A group: mode 0640 and that group (the tokens file and
    // its lock file), for applications of other users in it.
    gid_t group = static_cast<gid_t>(-1);
};

// The default directory for tokens files: $XDG_RUNTIME_DIR/preloadrun, or
// $HOME/.preloadrun without XDG_RUNTIME_DIR (never a name under /tmp that
// another user could take first). Created private (0700).
std::filesystem::path default_directory();
// default_directory()/tokens-<instance>.json
std::filesystem::path default_path(const std::string& instance);

// 32 random hex digits.
std::string new_instance_id();

class Publisher {
public:
    // Opens the directory once and checks it (exists, not a symlink, owned
    // by this user, not writable by group or others); every later operation
    // (the checks of the file and its lock, publication, removal) goes
    // through that descriptor, so a path changed after the check changes
    // nothing. Checks the file (not a symlink, not another user's), takes
    // the lock, and records a stale previous file if any.
    // Throws Error(already_exists) naming the owner pid when a live preloadrun
    // holds the path, Error(permission) for an unsafe location.
    Publisher(std::filesystem::path path, PublisherOptions options = {});
    Publisher(const Publisher&) = delete;
    Publisher& operator=(const Publisher&) = delete;
    ~Publisher();

    const std::filesystem::path& path() const noexcept { return path_; }
    // What was left at the path by a dead owner, if anything (for a log line).
    const std::optional<Liveness>& taken_over() const noexcept { return taken_over_; }

    // Sets file.generation to one more than the last published one and
    // writes it atomically.
    void publish(TokensFile& file);
    std::uint64_t generation() const noexcept { return generation_; }
    // Whether a publish syncs the file and its directory to storage: not on
    // a file system in memory (tmpfs, ramfs; the usual runtime directory),
    // where there is no storage to sync to.
    bool syncs() const noexcept { return syncs_; }

    // Removes the tokens file, then the lock file, then releases the lock.
    void remove() noexcept;

private:
    std::filesystem::path path_;
    std::string name_;
    Dir dir_;
    PublisherOptions options_;
    OwnerLock lock_;
    std::optional<Liveness> taken_over_;
    std::uint64_t generation_ = 0;
    bool syncs_ = true;
};

// Dir::open_safe() of the directory of a tokens file: a real directory (not a
// symlink) owned by this user and not writable by group or others. Throws
// Error(not_found) naming the fix, Error(permission).
Dir open_safe_directory(const std::filesystem::path& dir);

} // namespace preloadrun::tokens
