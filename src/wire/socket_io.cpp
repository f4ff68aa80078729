#include "wire/socket_io.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <fcntl.h>
#include <sched.h>
#include <string>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>

namespace preloadrun::hsm {

namespace {

// Bytes asked of recv() at most at a time.
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;

bool peer_gone(int err) noexcept {
    return err == EPIPE || err == ECONNRESET;
}

} // namespace

void write_frame(int fd, std::span<const std::uint8_t> payload,
                 std::chrono::steady_clock::time_point deadline) {
    auto header = frame_header(payload.size());
    const std::size_t total = kFrameHeader + payload.size();
    std::size_t sent = 0;
    while (sent < total) {
        std::array<iovec, 2> iov{};
        std::size_t count = 0;
        if (sent < kFrameHeader) {
            iov[count++] = {header.data() + sent, kFrameHeader - sent};
        }
        const std::size_t body_sent = sent > kFrameHeader ? sent - kFrameHeader : 0;
        if (body_sent < payload.size()) {
            // sendmsg does not write through iov_base; the cast only drops const.
            iov[count++] = {const_cast<std::uint8_t*>(payload.data()) + body_sent,
                            payload.size() - body_sent};
        }
        msghdr msg{};
        msg.msg_iov = iov.data();
        msg.msg_iovlen = count;
        const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) {
            sent += static_cast<std::size_t>(n);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            detail::wait_ready(fd, POLLOUT, deadline, "sending a frame");
        } else if (errno == EINTR) {
            continue;
        } else if (peer_gone(errno)) {
            throw Error(ErrorCode::unavailable, "the peer closed the connection");
        } else {
            throw_errno("sending a frame");
        }
    }
}

SecretBytes read_frame(int fd, FrameReader& reader,
                       std::chrono::steady_clock::time_point deadline) {
    auto frame = detail::try_read_frame(fd, reader, deadline);
    if (!frame) {
        throw Error(ErrorCode::timeout, "no complete frame before the deadline");
    }
    return std::move(*frame);
}

namespace {

// One recv() of whatever has come, up to a chunk, blocking if fd does. True
// when it fed bytes to the reader; false when nothing came (a receive timeout
// or a signal).
// Feeds the `n` bytes received into `chunk` to the reader, then wipes them
// from the chunk (a frame may hold a secret) however feeding ends.
void feed_received(FrameReader& reader, std::uint8_t* chunk, ssize_t n) {
    struct Wipe {
        std::uint8_t* data;
        std::size_t size;
        ~Wipe() { secure_wipe(data, size); }
    } wipe{chunk, static_cast<std::size_t>(n)};
    reader.feed({chunk, static_cast<std::size_t>(n)});
}

bool receive_once(int fd, FrameReader& reader) {
    std::array<std::uint8_t, kReadChunk> chunk; // NOLINT: filled by recv before use
    const ssize_t n = ::recv(fd, chunk.data(), chunk.size(), 0);
    if (n > 0) {
        feed_received(reader, chunk.data(), n);
        return true;
    }
    if (n == 0) {
        throw Error(ErrorCode::unavailable, reader.pending() > 0
                                                ? "the peer closed the connection mid-frame"
                                                : "the peer closed the connection");
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return false;
    }
    if (peer_gone(errno)) {
        throw Error(ErrorCode::unavailable, "the peer reset the connection");
    }
    throw_errno("receiving a frame");
}

} // namespace

void block_with_receive_timeout(int fd, std::chrono::milliseconds timeout) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
        throw_errno("fcntl(F_SETFL)");
    }
    const auto ms = std::max<std::int64_t>(timeout.count(), 0);
    timeval tv{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
    if (::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
        throw_errno("setsockopt(SO_RCVTIMEO)");
    }
}

SecretBytes read_reply(int fd, FrameReader& reader,
                       std::chrono::steady_clock::time_point deadline) {
    if (auto frame = reader.next()) {
        return std::move(*frame);
    }
    if (receive_once(fd, reader)) {
        if (auto frame = reader.next()) {
            return std::move(*frame);
        }
    }
    return read_frame(fd, reader, deadline); // the rest, or the wait, to the deadline
}

namespace {
// One thread of a process spins at a time: with more threads than cores
// waiting, spinning would take the cores their peers need.
std::atomic<bool> g_spinning{false};
} // namespace

ssize_t SpinWindow::receive(int fd, void* buf, std::size_t len) {
    if (skip_ > 0) {
        --skip_;
        errno = EAGAIN;
        return -1;
    }
    if (g_spinning.exchange(true, std::memory_order_acquire)) {
        errno = EAGAIN; // another thread spins: sleep in recv()
        return -1;
    }
    struct Release {
        ~Release() { g_spinning.store(false, std::memory_order_release); }
    } release;
    const auto start = std::chrono::steady_clock::now();
    const auto until = start + window_;
    for (;;) {
        const ssize_t n = ::recv(fd, buf, len, MSG_DONTWAIT);
        const int err = errno;
        const auto now = std::chrono::steady_clock::now();
        const bool late = now >= until;
        if (late) {
            // Nothing in the window, or bytes that came only after it (this
            // thread lost its core meanwhile): sleep in recv() for a while.
            skip_ = kSkipAfterMiss;
            window_ = kMaxSpin; // the next spin, after the skipped waits, starts wide again
        }
        if (n >= 0 || (err != EAGAIN && err != EWOULDBLOCK)) {
            if (!late) {
                window_ =
                    std::clamp<std::chrono::nanoseconds>(2 * (now - start), kMinSpin, kMaxSpin);
            }
            errno = err;
            return n; // bytes, the end of the stream, or an error the caller reports
        }
        if (late) {
            errno = EAGAIN;
            return -1;
        }
        ::sched_yield(); // a thread that can run here runs first
    }
}

SecretBytes read_reply(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline,
                       SpinWindow& spin) {
    if (auto frame = reader.next()) {
        return std::move(*frame);
    }
    {
        // Replies are small: what does not fit is read below.
        std::array<std::uint8_t, 4096> chunk; // NOLINT: filled by recv before use
        const ssize_t n = spin.receive(fd, chunk.data(), chunk.size());
        if (n > 0) {
            feed_received(reader, chunk.data(), n);
            if (auto frame = reader.next()) {
                return std::move(*frame);
            }
        }
    }
    // Nothing came while awake, or part of it, or the end of the stream or an
    // error (which the recv() below meets again and reports).
    return read_reply(fd, reader, deadline);
}

namespace detail {

void wait_ready(int fd, short events, std::chrono::steady_clock::time_point deadline,
                std::string_view what) {
    if (!wait_until(fd, events, deadline)) {
        throw Error(ErrorCode::timeout, "timed out " + std::string(what));
    }
}

bool wait_until(int fd, short events, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            return false;
        }
        pollfd pfd{fd, events, 0};
        const auto wait_ms = static_cast<int>(std::min<std::int64_t>(left.count(), 60'000));
        const int n = ::poll(&pfd, 1, wait_ms);
        if (n > 0) {
            if ((pfd.revents & POLLNVAL) != 0) {
                throw Error(ErrorCode::internal, "poll: descriptor is not open");
            }
            return true; // readable, writable, hung up or in error: the next call says which
        }
        if (n < 0 && errno != EINTR) {
            throw_errno("poll");
        }
    }
}

std::optional<SecretBytes> try_read_frame(int fd, FrameReader& reader,
                                          std::chrono::steady_clock::time_point deadline) {
    std::array<std::uint8_t, kReadChunk> chunk; // NOLINT: filled by recv before use
    std::size_t used = 0;                       // high-water mark, wiped on the way out
    struct Wipe {
        std::uint8_t* data;
        const std::size_t& size;
        ~Wipe() { secure_wipe(data, size); }
    } wipe{chunk.data(), used};

    for (;;) {
        if (auto frame = reader.next()) {
            return frame;
        }
        const std::size_t want = std::min(reader.wanted(), chunk.size());
        const ssize_t n = ::recv(fd, chunk.data(), want, MSG_DONTWAIT);
        if (n > 0) {
            const auto got = static_cast<std::size_t>(n);
            used = std::max(used, got);
            reader.feed({chunk.data(), got});
        } else if (n == 0) {
            throw Error(ErrorCode::unavailable, reader.pending() > 0
                                                    ? "the peer closed the connection mid-frame"
                                                    : "the peer closed the connection");
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (!wait_until(fd, POLLIN, deadline)) {
                return std::nullopt;
            }
        } else if (errno == EINTR) {
            continue;
        } else if (peer_gone(errno)) {
            throw Error(ErrorCode::unavailable, "the peer reset the connection");
        } else {
            throw_errno("receiving a frame");
        }
    }
}

} // namespace detail

} // namespace preloadrun::hsm
