#include "server/listener.hpp"

#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <cerrno>
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace preloadrun::sim {

namespace fs = std::filesystem;

namespace {

sockaddr_un address_of(const fs::path& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const auto& text = path.native();
    if (text.empty() || text.size() >= sizeof addr.sun_path) {
        throw Error(ErrorCode::usage, "socket path '" + text + "' is empty or longer than " +
                                          std::to_string(sizeof addr.sun_path - 1) + " bytes");
    }
    std::memcpy(addr.sun_path, text.c_str(), text.size() + 1);
    return addr;
}

// The socket's directory, created if missing, held open and checked: ours,
// and writable by no one else (who could otherwise replace the socket).
Dir socket_directory(const fs::path& socket, mode_t mode) {
    auto dir = socket.parent_path();
    if (dir.empty()) {
        dir = ".";
    }
    create_directories(dir.parent_path(), mode);
    Dir opened = Dir::open_or_create(dir, mode);
    opened.require(::geteuid(), S_IWGRP | S_IWOTH, "socket directory");
    return opened;
}

// A path that reaches `name` through the directory's descriptor when one fits
// a socket address; else the plain path (the directory is ours and private
// to writes, so it cannot change under us either).
std::string bind_path(const Dir& dir, const std::string& name, const fs::path& path) {
    try {
        return dir.fd_path(name);
    } catch (const Error&) {
        return path.string();
    }
}

// Removes a socket file nobody serves; refuses a live one or a non-socket.
void take_over(const Dir& dir, const std::string& name, const fs::path& path) {
    const auto st = dir.stat_entry(name);
    if (!st) {
        return;
    }
    if (!S_ISSOCK(st->st_mode)) {
        throw Error(ErrorCode::already_exists,
                    path.string() + " exists and is not a socket; refusing to replace it");
    }
    if (connect_unix(bind_path(dir, name, path))) {
        throw Error(ErrorCode::already_exists, "another hsmsim is serving on " + path.string());
    }
    dir.remove(name);
    log::get("sim.service")->info("removed stale socket {}", path.string());
}

} // namespace

Fd connect_unix(const fs::path& path) {
    auto addr = address_of(path);
    Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) {
        throw_errno("cannot create a socket");
    }
    int rc;
    do {
        rc = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        return Fd();
    }
    return fd;
}

Listener::Listener(fs::path path, mode_t mode, mode_t dir_mode)
    : path_(std::move(path)), name_(path_.filename().string()) {
    (void)address_of(path_); // the path itself must fit, for clients
    dir_ = socket_directory(path_, dir_mode);
    take_over(dir_, name_, path_);
    auto addr = address_of(bind_path(dir_, name_, path_));
    fd_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) {
        throw_errno("cannot create a socket");
    }
    // The socket is created with exactly `mode`, by the umask alone: no
    // window in which it is more open, and no chmod by path afterwards.
    // (serve() binds before it starts any thread that creates files.)
    mode_t old = ::umask(static_cast<mode_t>(~mode & 0777));
    int rc = ::bind(fd_.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
    int err = errno;
    ::umask(old);
    if (rc != 0) {
        if (err == EADDRINUSE) {
            throw Error(ErrorCode::already_exists,
                        "another hsmsim is serving on " + path_.string());
        }
        throw_errno("cannot bind " + path_.string(), err);
    }
    const auto st = dir_.stat_entry(name_);
    if (!st || !S_ISSOCK(st->st_mode)) {
        throw Error(ErrorCode::io, "the socket " + path_.string() + " vanished after bind");
    }
    dev_ = st->st_dev;
    ino_ = st->st_ino;
    if (::listen(fd_.get(), 128) != 0) {
        int e = errno;
        remove_own_socket();
        throw_errno("cannot listen on " + path_.string(), e);
    }
}

Listener::~Listener() {
    fd_.reset();
    remove_own_socket();
}

void Listener::remove_own_socket() noexcept {
    // Only our own socket: another service may have taken the path over.
    try {
        const auto st = dir_.stat_entry(name_);
        if (st && st->st_dev == dev_ && st->st_ino == ino_) {
            dir_.remove(name_);
        }
    } catch (const Error&) {
        // Nothing more to do on the way out.
    }
}

} // namespace preloadrun::sim
