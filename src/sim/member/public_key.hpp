#pragma once
// A PKCS#11 public key, as its attributes give it, as a SubjectPublicKeyInfo
// (DER), so that keys on different members compare byte for byte.

#include "preloadrun/common/bytes.hpp"

#include <cstdint>
#include <optional>

namespace preloadrun::sim::member {

struct PublicKey {
    Bytes spki;
    std::uint32_t bits = 0;
    bool ec_p384 = false; // EC only: P-384 (else P-256)
};

// RSA: the modulus and public exponent (big-endian). nullopt when they do not
// make a key.
std::optional<PublicKey> rsa_public_key(const Bytes& modulus, const Bytes& exponent);
// EC: CKA_EC_PARAMS (a named curve's OID, DER) and CKA_EC_POINT (a DER OCTET
// STRING holding the point, or the bare point as some libraries give it).
// nullopt for a curve other than P-256 and P-384, or a point not on it.
std::optional<PublicKey> ec_public_key(const Bytes& params, const Bytes& point);
// The size of the curve CKA_EC_PARAMS names: 256 or 384; nullopt for another.
std::optional<std::uint32_t> ec_curve_bits(const Bytes& params);

} // namespace preloadrun::sim::member
