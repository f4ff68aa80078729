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
// The same without a string of their own, for secrets kept in locked
// memory: to_hex_into writes 2 * bytes.size() characters into `out` (which
// must be that long); from_hex_into decodes `hex` into `out` and is false,
// leaving `out` unspecified, for a non-hex character or a length that is
// not 2 * out.size().
void to_hex_into(std::span<const std::uint8_t> bytes, std::span<char> out) noexcept;
bool from_hex_into(std::string_view hex, std::span<std::uint8_t> out) noexcept;

inline Bytes to_bytes(std::string_view s) {
    return Bytes(s.begin(), s.end());
}

} // namespace preloadrun
