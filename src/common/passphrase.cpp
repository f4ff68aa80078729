#include "preloadrun/common/passphrase.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/log.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun {

namespace {

void strip_newline(SecureBuffer& buf) {
    auto size = buf.size();
    if (size > 0 && buf.data()[size - 1] == '\n') {
        --size;
        if (size > 0 && buf.data()[size - 1] == '\r') {
            --size;
        }
    }
    buf.truncate(size);
}

void require_non_empty(const SecureBuffer& buf, const std::string& where) {
    if (buf.empty()) {
        throw Error(ErrorCode::usage, "empty passphrase from " + where);
    }
}

// Reads straight into the buffer, a byte at a time: no copy of the line is
// left on the stack or in the heap. The line ends at a newline or at the end
// of the input; its line ending, "\n" or "\r\n", is removed as from a
// passphrase file (a CR without a newline is part of the passphrase).
SecureBuffer read_line(int fd, const std::string& where) {
    SecureBuffer buf(kMaxPassphrase + 2); // + "\r\n"
    std::size_t got = 0;
    bool newline = false;
    while (got < buf.size()) {
        const ssize_t n = ::read(fd, buf.data() + got, 1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            throw_errno("cannot read passphrase from " + where);
        }
        if (n == 0) {
            break;
        }
        if (buf.data()[got] == '\n') {
            buf.data()[got] = 0;
            newline = true;
            break;
        }
        ++got;
    }
    if (newline && got > 0 && buf.data()[got - 1] == '\r') {
        --got;
    }
    if (got > kMaxPassphrase) {
        throw Error(ErrorCode::limit, "passphrase from " + where + " is longer than " +
                                          std::to_string(kMaxPassphrase) + " bytes");
    }
    buf.truncate(got);
    return buf;
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// Opens a passphrase file, following a symbolic link (secrets are often
// mounted as links: Kubernetes volumes, systemd credentials), and checks the
// file reached: a regular file of this user or root that no one else may
// write. Others reading it is only warned about: the passphrase is known
// to them, which refusing would not undo.
Fd open_passphrase_file(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) {
            throw Error(ErrorCode::not_found,
                        "cannot read the passphrase file: " + path.string() + ": no such file");
        }
        throw Error(err == EACCES || err == EPERM ? ErrorCode::permission : ErrorCode::io,
                    "cannot read the passphrase file: " + path.string() + ": " +
                        std::strerror(err));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw_errno("cannot stat the passphrase file " + path.string());
    }
    const std::string what = "passphrase file " + path.string();
    if (!S_ISREG(st.st_mode)) {
        throw Error(ErrorCode::io, what + " is not a regular file");
    }
    if (st.st_uid != ::geteuid() && st.st_uid != 0) {
        throw Error(ErrorCode::permission,
                    what + " belongs to uid " + std::to_string(st.st_uid) +
                        ", neither this user (uid " + std::to_string(::geteuid()) +
                        ") nor root, and that user could change it: refused");
    }
    if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        throw Error(ErrorCode::permission, what + " is writable by group or others (mode " +
                                               mode_text(st.st_mode) +
                                               "), who could change it: refused (chmod go-w)");
    }
    if ((st.st_mode & S_IROTH) != 0) {
        log::get("passphrase")
            ->warn("{} is readable by others (mode {}): every local user can read the "
                   "passphrase (chmod o-r)",
                   what, mode_text(st.st_mode));
    }
    return fd;
}

} // namespace

SecureBuffer read_passphrase_file(const std::filesystem::path& path) {
    const Fd fd = open_passphrase_file(path);
    SecureBuffer buf;
    try {
        buf = read_open_secret(fd.get(), path, kMaxPassphrase + 2); // + "\r\n"
    } catch (const Error& e) {
        if (e.code() == ErrorCode::limit) {
            throw Error(ErrorCode::limit, "passphrase file " + path.string() + " is longer than " +
                                              std::to_string(kMaxPassphrase) + " bytes");
        }
        throw Error(e.code(), std::string("cannot read the passphrase file: ") + e.what());
    }
    strip_newline(buf);
    if (buf.size() > kMaxPassphrase) {
        throw Error(ErrorCode::limit, "passphrase file " + path.string() + " is longer than " +
                                          std::to_string(kMaxPassphrase) + " bytes");
    }
    require_non_empty(buf, path.string());
    return buf;
}

SecureBuffer read_passphrase_fd(int fd) {
    auto where = "descriptor " + std::to_string(fd);
    auto buf = read_line(fd, where);
    require_non_empty(buf, where);
    return buf;
}

} // namespace preloadrun
