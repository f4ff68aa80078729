#include "preloadrun/hsm/frame.hpp"

#include "frame_io.hpp"
#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <openssl/crypto.h>
#include <string>
#include <sys/socket.h>
#include <sys/uio.h>

namespace preloadrun::hsm {

namespace {

std::size_t header_length(const std::uint8_t* p) noexcept {
    return (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) |
           std::size_t{p[3]};
}

std::array<std::uint8_t, kFrameHeader> make_header(std::size_t length) {
    if (length > kMaxFrame) {
        throw Error(ErrorCode::limit, "message of " + std::to_string(length) +
                                          " bytes exceeds the frame limit of " +
                                          std::to_string(kMaxFrame));
    }
    return {static_cast<std::uint8_t>(length >> 24), static_cast<std::uint8_t>(length >> 16),
            static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length)};
}

[[noreturn]] void throw_oversized(std::size_t length) {
    throw Error(ErrorCode::protocol, "frame header announces " + std::to_string(length) +
                                         " bytes, more than the limit of " +
                                         std::to_string(kMaxFrame));
}

// A buffer larger than this is given back once empty.
constexpr std::size_t kKeepCapacity = std::size_t{64} * 1024;
// Bytes asked of recv() at most at a time.
constexpr std::size_t kReadChunk = std::size_t{64} * 1024;

bool peer_gone(int err) noexcept {
    return err == EPIPE || err == ECONNRESET;
}

} // namespace

Bytes encode_frame(std::span<const std::uint8_t> payload) {
    const auto header = make_header(payload.size());
    // Sized once and filled: GCC 12 misreads insert() after reserve() at -O2
    // as an overflow (-Wstringop-overflow).
    Bytes out(kFrameHeader + payload.size());
    std::copy(header.begin(), header.end(), out.begin());
    if (!payload.empty()) {
        std::memcpy(out.data() + kFrameHeader, payload.data(), payload.size());
    }
    return out;
}

// ---- FrameReader -------------------------------------------------------------

void FrameReader::feed(std::span<const std::uint8_t> bytes) {
    if (offset_ > 0) { // compact: drop (and wipe) what next() consumed
        OPENSSL_cleanse(buffer_.data(), offset_);
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(offset_));
        offset_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    // Check every header now buffered, so that an oversized one is refused
    // before its body is awaited.
    std::size_t at = 0;
    while (at + kFrameHeader <= buffer_.size()) {
        const std::size_t length = header_length(buffer_.data() + at);
        if (length > kMaxFrame) {
            throw_oversized(length);
        }
        at += kFrameHeader + length;
    }
}

std::optional<SecretBytes> FrameReader::next() {
    if (pending() < kFrameHeader) {
        return std::nullopt;
    }
    const std::size_t length = header_length(buffer_.data() + offset_);
    if (pending() - kFrameHeader < length) {
        return std::nullopt;
    }
    const auto begin = buffer_.begin() + static_cast<std::ptrdiff_t>(offset_ + kFrameHeader);
    SecretBytes payload(begin, begin + static_cast<std::ptrdiff_t>(length));
    offset_ += kFrameHeader + length;
    if (offset_ == buffer_.size()) { // nothing left: wipe, and give back a big buffer
        OPENSSL_cleanse(buffer_.data(), buffer_.size());
        buffer_.clear();
        offset_ = 0;
        if (buffer_.capacity() > kKeepCapacity) {
            SecretBytes().swap(buffer_);
        }
    }
    return payload;
}

std::size_t FrameReader::wanted() const noexcept {
    const std::size_t have = pending();
    if (have < kFrameHeader) {
        return kFrameHeader - have;
    }
    const std::size_t total = kFrameHeader + header_length(buffer_.data() + offset_);
    return total > have ? total - have : 0;
}

// ---- blocking I/O with a deadline ------------------------------------------------

void write_frame(int fd, std::span<const std::uint8_t> payload,
                 std::chrono::steady_clock::time_point deadline) {
    auto header = make_header(payload.size());
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
        ~Wipe() { OPENSSL_cleanse(data, size); }
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
