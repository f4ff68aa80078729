#include "preloadrun/hsm/gcm.hpp"

namespace preloadrun::hsm {

bool gcm_tag_bits_allowed(std::uint32_t bits) noexcept {
    return bits >= 96 && bits <= 128 && bits % 8 == 0;
}

std::string gcm_parameter_problem(std::size_t iv_bytes, std::uint32_t tag_bits) {
    if (iv_bytes < kGcmMinIvBytes || iv_bytes > kGcmMaxIvBytes) {
        return "AES-GCM IV of " + std::to_string(iv_bytes) + " bytes refused: it must be " +
               std::to_string(kGcmMinIvBytes) + " to " + std::to_string(kGcmMaxIvBytes) +
               " bytes (12 recommended)";
    }
    if (!gcm_tag_bits_allowed(tag_bits)) {
        return "AES-GCM tag of " + std::to_string(tag_bits) +
               " bits refused: it must be 96, 104, 112, 120 or 128 bits";
    }
    return {};
}

} // namespace preloadrun::hsm
