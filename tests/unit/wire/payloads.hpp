#pragma once
// Payloads for the framing tests, and frames' payloads as plain Bytes.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <doctest/doctest.h>
#include <optional>

namespace wiretest {

// `size` bytes of a recognisable pattern.
inline preloadrun::Bytes payload_of(std::size_t size) {
    preloadrun::Bytes out(size);
    for (std::size_t i = 0; i < size; ++i) {
        out[i] = static_cast<std::uint8_t>(i * 7 + 3);
    }
    return out;
}

// A frame's payload as plain Bytes, to compare with what was sent.
inline preloadrun::Bytes plain(const preloadrun::SecretBytes& payload) {
    return {payload.begin(), payload.end()};
}
inline preloadrun::Bytes plain(const std::optional<preloadrun::SecretBytes>& payload) {
    REQUIRE(payload);
    return plain(*payload);
}

} // namespace wiretest
