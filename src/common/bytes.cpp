#include "preloadrun/common/bytes.hpp"

#include "preloadrun/common/error.hpp"

namespace preloadrun {

namespace {
int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}
} // namespace

std::string to_hex(std::span<const std::uint8_t> bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes.size() * 2);
    for (auto b : bytes) {
        out.push_back(digits[b >> 4]);
        out.push_back(digits[b & 0x0f]);
    }
    return out;
}

bool is_hex(std::string_view text) noexcept {
    if (text.size() % 2 != 0) {
        return false;
    }
    for (char c : text) {
        if (hex_value(c) < 0) {
            return false;
        }
    }
    return true;
}

Bytes from_hex(std::string_view hex) {
    if (!is_hex(hex)) {
        throw Error(ErrorCode::usage, "not an even-length hex string: '" + std::string(hex) + "'");
    }
    Bytes out(hex.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
        out[i] = static_cast<std::uint8_t>(hex_value(hex[2 * i]) * 16 + hex_value(hex[2 * i + 1]));
    }
    return out;
}

} // namespace preloadrun
