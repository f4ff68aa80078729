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

void to_hex_into(std::span<const std::uint8_t> bytes, std::span<char> out) noexcept {
    static constexpr char digits[] = "0123456789abcdef";
    for (std::size_t i = 0; i < bytes.size() && 2 * i + 1 < out.size(); ++i) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 0x0f];
    }
}

bool from_hex_into(std::string_view hex, std::span<std::uint8_t> out) noexcept {
    if (hex.size() != 2 * out.size()) {
        return false;
    }
    for (std::size_t i = 0; i < out.size(); ++i) {
        const int high = hex_value(hex[2 * i]);
        const int low = hex_value(hex[2 * i + 1]);
        if (high < 0 || low < 0) {
            return false;
        }
        out[i] = static_cast<std::uint8_t>(high * 16 + low);
    }
    return true;
}

std::string to_hex(std::span<const std::uint8_t> bytes) {
    std::string out(bytes.size() * 2, '\0');
    to_hex_into(bytes, out);
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
    Bytes out(hex.size() / 2);
    if (!from_hex_into(hex, out)) {
        throw Error(ErrorCode::usage, "not an even-length hex string: '" + std::string(hex) + "'");
    }
    return out;
}

} // namespace preloadrun
