#pragma once
// The RSA public exponents accepted on both sides of the wire: the PKCS#11
// module refuses others before it asks (CKR_ATTRIBUTE_VALUE_INVALID), and
// the HSM service refuses them from any client. Odd, at least 3, at most 32
// bytes once leading zero bytes are dropped.

#include "preloadrun/common/bytes.hpp"

#include <cstdint>
#include <span>
#include <string>

namespace preloadrun::hsm {

struct RsaExponent {
    Bytes value;         // big-endian, without leading zero bytes
    std::string problem; // empty when accepted, else why not (one sentence)
};

RsaExponent rsa_public_exponent(std::span<const std::uint8_t> given);

} // namespace preloadrun::hsm
