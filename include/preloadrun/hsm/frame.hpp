#pragma once
// Framing of the wire: 4-byte big-endian length, then the message. Pure
// functions plus a bounded incremental reader; no knowledge of the messages.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace preloadrun::hsm {

inline constexpr std::size_t kMaxFrame = 1024 * 1024; // bytes of payload
inline constexpr std::size_t kFrameHeader = 4;

// Header + payload. Throws Error(limit) when payload exceeds kMaxFrame.
Bytes encode_frame(std::span<const std::uint8_t> payload);

// Accumulates bytes read from a stream and yields complete frames. Frames
// carry passphrases and decrypted data: the buffer and the payloads it hands
// out are SecretBytes, wiped whenever their memory is given back.
class FrameReader {
public:
    // Appends received bytes. Throws Error(protocol) as soon as a header
    // announces a frame larger than kMaxFrame.
    void feed(std::span<const std::uint8_t> bytes);
    // The next complete payload, if one is buffered.
    std::optional<SecretBytes> next();
    // Bytes buffered that do not yet form a complete frame.
    std::size_t pending() const noexcept { return buffer_.size() - offset_; }
    // How many more bytes complete the next frame (or its header). Reading
    // at most this many never buffers bytes beyond one frame, so a socket's
    // readability keeps telling whether another frame is waiting.
    std::size_t wanted() const noexcept;

private:
    SecretBytes buffer_;
    std::size_t offset_ = 0;
};

// Blocking helpers on a stream socket, with a deadline (one already passed
// still gets one non-blocking attempt). read_frame reads no byte beyond the
// frame it returns. They throw
// Error(timeout) when the deadline passes, Error(unavailable) when the peer
// closed the connection, Error(io) on other socket errors, Error(protocol) on
// an oversized frame.
void write_frame(int fd, std::span<const std::uint8_t> payload,
                 std::chrono::steady_clock::time_point deadline);
SecretBytes read_frame(int fd, FrameReader& reader, std::chrono::steady_clock::time_point deadline);

} // namespace preloadrun::hsm
