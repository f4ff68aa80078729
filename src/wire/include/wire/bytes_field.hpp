#pragma once
// Protobuf `bytes` fields are std::string; ours are Bytes.

#include "preloadrun/common/bytes.hpp"

#include <span>
#include <string>

namespace preloadrun::hsm::detail {

inline std::string to_field(std::span<const std::uint8_t> bytes) {
    return {bytes.begin(), bytes.end()};
}

inline Bytes from_field(const std::string& field) {
    return {field.begin(), field.end()};
}

} // namespace preloadrun::hsm::detail
