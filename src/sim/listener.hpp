#pragma once
// The service's listening Unix sockets: directory creation, stale-socket
// takeover, file modes, removal on shutdown.

#include "preloadrun/common/fd.hpp"

#include <filesystem>
#include <sys/stat.h>
#include <sys/types.h>

namespace preloadrun::sim {

class Listener {
public:
    // Creates the socket's directory if missing (with dir_mode), takes over a
    // stale socket file, binds, sets `mode`, listens. Throws
    // Error(already_exists) when a live service answers on `path`,
    // Error(usage) for a path too long for a Unix socket, Error(io) otherwise.
    Listener(std::filesystem::path path, mode_t mode, mode_t dir_mode);
    Listener(const Listener&) = delete;
    Listener& operator=(const Listener&) = delete;
    // Closes the socket and removes the file (if it is still ours).
    ~Listener();

    int fd() const noexcept { return fd_.get(); }
    const std::filesystem::path& path() const noexcept { return path_; }

private:
    std::filesystem::path path_;
    Fd fd_;
    dev_t dev_ = 0;
    ino_t ino_ = 0;
};

// Connects to a Unix stream socket; an invalid Fd when nobody answers.
Fd connect_unix(const std::filesystem::path& path);

} // namespace preloadrun::sim
