#pragma once
// The service's listening Unix sockets: directory creation and checks,
// stale-socket takeover, file modes, removal on shutdown. The socket's
// directory is opened once and checked (owned by this user, writable by no
// one else); the socket is then bound, tested and removed through that
// descriptor, never by a path that could change in between.

#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/fd.hpp"

#include <filesystem>
#include <string>
#include <sys/stat.h>
#include <sys/types.h>

namespace preloadrun::sim {

class Listener {
public:
    // Creates the socket's directory if missing (with dir_mode), refuses it
    // unless it is this user's and writable by no one else, takes over a
    // stale socket file, binds with exactly `mode`, listens. Throws
    // Error(already_exists) when a live service answers on `path`,
    // Error(permission) for an unsafe directory, Error(usage) for a path
    // too long for a Unix socket, Error(io) otherwise.
    Listener(std::filesystem::path path, mode_t mode, mode_t dir_mode);
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    // Closes the socket and removes the file (if it is still ours).
    ~Listener();

    int fd() const noexcept { return fd_.get(); }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    void remove_own_socket() noexcept;

    std::filesystem::path path_;
    std::string name_;
    Dir dir_;
    Fd fd_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

// Connects to a Unix stream socket; an invalid Fd when nobody answers.
Fd connect_unix(const std::filesystem::path& path);

} // namespace preloadrun::sim
