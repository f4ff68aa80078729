#include "sim/listener.hpp"

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

// mkdir -p, giving `mode` to each directory it creates.
void make_dirs(const fs::path& dir, mode_t mode) {
    if (dir.empty()) {
        return;
    }
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            throw Error(ErrorCode::io, dir.string() + ": not a directory");
        }
        return;
    }
    if (dir.has_parent_path() && dir.parent_path() != dir) {
        make_dirs(dir.parent_path(), mode);
    }
    if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
        throw_errno("cannot create directory " + dir.string());
    }
    if (::chmod(dir.c_str(), mode) != 0) { // the umask must not narrow it
        throw_errno("cannot set the mode of " + dir.string());
    }
}

// Removes a socket file nobody serves; refuses a live one or a non-socket.
void take_over(const fs::path& path) {
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) {
            return;
        }
        throw_errno("cannot stat " + path.string());
    }
    if (!S_ISSOCK(st.st_mode)) {
        throw Error(ErrorCode::already_exists,
                    path.string() + " exists and is not a socket; refusing to replace it");
    }
    if (connect_unix(path)) {
        throw Error(ErrorCode::already_exists, "another hsmsim is serving on " + path.string());
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        throw_errno("cannot remove the stale socket " + path.string());
    }
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

Listener::Listener(fs::path path, mode_t mode, mode_t dir_mode) : path_(std::move(path)) {
    auto addr = address_of(path_);
    make_dirs(path_.parent_path(), dir_mode);
    take_over(path_);
    fd_ = Fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd_) {
        throw_errno("cannot create a socket");
    }
    // No window in which the socket is more open than asked: bind under a
    // umask that leaves at most `mode`, then set `mode` exactly. (serve()
    // binds before it starts any thread that creates files.)
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
    struct stat st {};
    if (::chmod(path_.c_str(), mode) != 0 || ::stat(path_.c_str(), &st) != 0) {
        int e = errno;
        ::unlink(path_.c_str());
        throw_errno("cannot set the mode of " + path_.string(), e);
    }
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    if (::listen(fd_.get(), 128) != 0) {
        int e = errno;
        ::unlink(path_.c_str());
        throw_errno("cannot listen on " + path_.string(), e);
    }
}

Listener::~Listener() {
    fd_.reset();
    // Only our own socket: another service may have taken the path over.
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
        ::unlink(path_.c_str());
    }
}

} // namespace preloadrun::sim
