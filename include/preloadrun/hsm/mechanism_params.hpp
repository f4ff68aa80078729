#pragma once
// The mechanism parameters accepted on both sides of the wire: the PKCS#11
// module refuses others before it asks (CKR_MECHANISM_PARAM_INVALID), and
// hsmsim refuses them from any client.
//
// AES-GCM IV: 12 to 128 bytes. 12 bytes (96 bits) is the size GCM is built for; a
// shorter IV has fewer values, so two messages under one key are far likelier
// to share one, and a repeated IV gives away the authentication key.
// Tag: 96, 104, 112, 120 or 128 bits (NIST SP 800-38D); a 32- or 64-bit tag
// can be forged with feasible effort.

#include "preloadrun/hsm/types.hpp"

#include <cstddef>
#include <cstdint>
#include <string>

namespace preloadrun::hsm {

inline constexpr std::size_t kGcmMinIvBytes = 12;
inline constexpr std::size_t kGcmMaxIvBytes = 128;
inline constexpr std::uint32_t kGcmDefaultTagBits = 128; // when the wire says 0

bool gcm_tag_bits_allowed(std::uint32_t bits) noexcept;

// Empty when the parameters are accepted, else why not (one sentence that
// names what is accepted).
std::string gcm_parameter_problem(std::size_t iv_bytes, std::uint32_t tag_bits);

inline constexpr std::size_t kAesBlock = 16;

// The parameters of any mechanism: the IV's size for its kind (CBC and CTR:
// 16 bytes; ECB and CMAC: none; key wrap: none or RFC 3394's 8 bytes, RFC
// 5649's 4), CTR's counter bits (1..128), HMAC's hash, and GCM's as above.
// Empty when accepted, else why not.
std::string mechanism_parameter_problem(const Mechanism& mech);

} // namespace preloadrun::hsm
