#include "preloadrun/hsm/rsa_exponent.hpp"

#include <algorithm>

namespace preloadrun::hsm {

RsaExponent rsa_public_exponent(std::span<const std::uint8_t> given) {
    const auto first = std::find_if(given.begin(), given.end(), [](auto b) { return b != 0; });
    RsaExponent out{Bytes(first, given.end()), {}};
    const auto& e = out.value;
    if (e.empty() || e.size() > 32 || (e.back() & 1U) == 0 || (e.size() == 1 && e[0] < 3)) {
        out.problem = "the public exponent must be odd, at least 3 and at most 32 bytes";
    }
    return out;
}

} // namespace preloadrun::hsm
