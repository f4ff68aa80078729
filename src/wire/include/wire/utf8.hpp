#pragma once
// Protobuf's proto3 parser rejects a whole message whose `string` field holds
// malformed UTF-8 (and its serialiser logs to stderr), so text is checked
// before it goes on the wire.

#include <cstddef>
#include <string>
#include <string_view>

namespace preloadrun::hsm::detail {

// Length of the well-formed UTF-8 sequence at text[at], or 0 (Unicode 15,
// table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF).
inline std::size_t utf8_sequence(std::string_view text, std::size_t at) noexcept {
    const auto byte = [&](std::size_t i) -> unsigned {
        return at + i < text.size() ? static_cast<unsigned char>(text[at + i]) : 0x100U;
    };
    const auto tail = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
        return byte(i) >= lo && byte(i) <= hi;
    };
    const unsigned b0 = byte(0);
    if (b0 < 0x80) {
        return 1;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        return tail(1) ? 2 : 0;
    }
    if (b0 == 0xE0) {
        return tail(1, 0xA0) && tail(2) ? 3 : 0;
    }
    if (b0 == 0xED) {
        return tail(1, 0x80, 0x9F) && tail(2) ? 3 : 0;
    }
    if (b0 >= 0xE1 && b0 <= 0xEF) {
        return tail(1) && tail(2) ? 3 : 0;
    }
    if (b0 == 0xF0) {
        return tail(1, 0x90) && tail(2) && tail(3) ? 4 : 0;
    }
    if (b0 >= 0xF1 && b0 <= 0xF3) {
        return tail(1) && tail(2) && tail(3) ? 4 : 0;
    }
    if (b0 == 0xF4) {
        return tail(1, 0x80, 0x8F) && tail(2) && tail(3) ? 4 : 0;
    }
    return 0;
}

inline bool is_utf8(std::string_view text) noexcept {
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t n = utf8_sequence(text, at);
        if (n == 0) {
            return false;
        }
        at += n;
    }
    return true;
}

// `text` with each byte that is not part of well-formed UTF-8 replaced by '?'.
inline std::string to_utf8(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t at = 0; at < text.size();) {
        const std::size_t n = utf8_sequence(text, at);
        out.append(n == 0 ? std::string_view("?") : text.substr(at, n));
        at += n == 0 ? 1 : n;
    }
    return out;
}

} // namespace preloadrun::hsm::detail
