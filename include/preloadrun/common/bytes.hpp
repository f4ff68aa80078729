#pragma once
// Byte strings and their hex form.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace preloadrun {

using Bytes = std::vector<std::uint8_t>;

std::string to_hex(std::span<const std::uint8_t> bytes);
// Throws Error(usage) on odd length or a non-hex character.
Bytes from_hex(std::string_view hex);
bool is_hex(std::string_view text) noexcept;

inline Bytes to_bytes(std::string_view s) {
    return Bytes(s.begin(), s.end());
}

} // namespace preloadrun
