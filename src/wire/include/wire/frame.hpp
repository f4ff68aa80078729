#pragma once
// Framing of the wire: 4-byte big-endian length, then the message. Pure
// functions plus a bounded incremental reader; no I/O (socket_io.hpp reads
// and writes frames on a socket) and no knowledge of the messages.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace preloadrun::hsm {

inline constexpr std::size_t kMaxFrame = 1024 * 1024; // bytes of payload
inline constexpr std::size_t kFrameHeader = 4;

// The header of a frame of `length` bytes of payload. Throws Error(limit)
// when length exceeds kMaxFrame.
std::array<std::uint8_t, kFrameHeader> frame_header(std::size_t length);
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

} // namespace preloadrun::hsm
