#pragma once
// The AES-GCM parameters accepted on both sides of the wire: the PKCS#11
// module refuses others before it asks (CKR_MECHANISM_PARAM_INVALID), and
// hsmsim refuses them from any client.
//
// IV: 12 to 128 bytes. 12 bytes (96 bits) is the size GCM is built for; a
// shorter IV has fewer values, so two messages under one key are far likelier
// to share one, and a repeated IV gives away the authentication key.
// Tag: 96, 104, 112, 120 or 128 bits (NIST SP 800-38D); a 32- or 64-bit tag
// can be forged with feasible effort.

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

} // namespace preloadrun::hsm
