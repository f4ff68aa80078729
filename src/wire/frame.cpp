#include "wire/frame.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <algorithm>
#include <cstring>
#include <string>

namespace preloadrun::hsm {

namespace {

std::size_t header_length(const std::uint8_t* p) noexcept {
    return (std::size_t{p[0]} << 24) | (std::size_t{p[1]} << 16) | (std::size_t{p[2]} << 8) |
           std::size_t{p[3]};
}

[[noreturn]] void throw_oversized(std::size_t length) {
    throw Error(ErrorCode::protocol, "frame header announces " + std::to_string(length) +
                                         " bytes, more than the limit of " +
                                         std::to_string(kMaxFrame));
}

// A buffer larger than this is given back once empty.
constexpr std::size_t kKeepCapacity = std::size_t{64} * 1024;

} // namespace

std::array<std::uint8_t, kFrameHeader> frame_header(std::size_t length) {
    if (length > kMaxFrame) {
        throw Error(ErrorCode::limit, "message of " + std::to_string(length) +
                                          " bytes exceeds the frame limit of " +
                                          std::to_string(kMaxFrame));
    }
    return {static_cast<std::uint8_t>(length >> 24), static_cast<std::uint8_t>(length >> 16),
            static_cast<std::uint8_t>(length >> 8), static_cast<std::uint8_t>(length)};
}

Bytes encode_frame(std::span<const std::uint8_t> payload) {
    const auto header = frame_header(payload.size());
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
        secure_wipe(buffer_.data(), offset_);
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
        secure_wipe(buffer_.data(), buffer_.size());
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

} // namespace preloadrun::hsm
