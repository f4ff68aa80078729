#include "preloadrun/common/passphrase.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/files.hpp"

#include <cerrno>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <termios.h>
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
// left on the stack or in the heap.
SecureBuffer read_line(int fd, const std::string& where) {
    SecureBuffer buf(kMaxPassphrase + 1);
    std::size_t got = 0;
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
            break;
        }
        ++got;
    }
    if (got > kMaxPassphrase) {
        throw Error(ErrorCode::limit, "passphrase from " + where + " is longer than " +
                                          std::to_string(kMaxPassphrase) + " bytes");
    }
    buf.truncate(got);
    if (got > 0 && buf.data()[got - 1] == '\r') {
        buf.truncate(got - 1);
    }
    return buf;
}

class EchoOff {
public:
    explicit EchoOff(int fd) : fd_(fd) {
        if (::tcgetattr(fd_, &saved_) == 0) {
            termios quiet = saved_;
            quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
            quiet.c_lflag |= ECHONL;
            active_ = ::tcsetattr(fd_, TCSAFLUSH, &quiet) == 0;
        }
    }
    EchoOff(const EchoOff&) = delete;
    EchoOff& operator=(const EchoOff&) = delete;
    ~EchoOff() {
        if (active_) {
            ::tcsetattr(fd_, TCSAFLUSH, &saved_);
        }
    }

private:
    int fd_;
    termios saved_{};
    bool active_ = false;
};

SecureBuffer ask(int tty, const std::string& prompt) {
    if (::write(tty, prompt.data(), prompt.size()) < 0) {
        throw_errno("cannot write to /dev/tty");
    }
    EchoOff echo_off(tty);
    return read_line(tty, "the terminal");
}

} // namespace

SecureBuffer read_passphrase_file(const std::filesystem::path& path) {
    SecureBuffer buf;
    try {
        buf = read_secret_file(path, kMaxPassphrase + 2); // + "\r\n"
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

SecureBuffer prompt_passphrase(const std::string& prompt, bool confirm) {
    Fd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
    if (!tty) {
        throw Error(ErrorCode::usage,
                    "no terminal to ask for the passphrase on; use --passphrase-file");
    }
    auto first = ask(tty.get(), prompt);
    require_non_empty(first, "the terminal");
    if (confirm) {
        auto second = ask(tty.get(), "Again: ");
        if (first.size() != second.size() ||
            CRYPTO_memcmp(first.data(), second.data(), first.size()) != 0) {
            throw Error(ErrorCode::usage, "the two passphrases differ");
        }
    }
    return first;
}

} // namespace preloadrun
