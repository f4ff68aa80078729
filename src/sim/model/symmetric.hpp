#pragma once
// The secret-key mechanisms of a simulated module (OpenSSL 3 EVP): AES in
// ECB, CBC, CBC with PKCS#7 padding, CTR, GCM and key wrap (RFC 3394 and
// 5649), AES-CMAC, and HMAC with generic secret keys.
//
// Parameters were checked (hsm::mechanism_parameter_problem) before any of
// these is called. Data a mode cannot take (not whole blocks, a counter
// that would wrap) throws Error(usage); a ciphertext that does not decrypt
// (bad padding, a wrapped key whose integrity check fails) throws
// Error(crypto), one message whatever the cause.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <span>

namespace preloadrun::sim {

// Encrypt or decrypt with an AES mode under `key` (16, 24 or 32 bytes). GCM:
// the ciphertext is followed by the tag.
Bytes aes_crypt(bool encrypt, const hsm::Mechanism& mech, const SecureBuffer& key,
                std::span<const std::uint8_t> data);

// The MAC of `data`: AES-CMAC with an AES key, HMAC (mech.hash) with a
// generic secret.
Bytes mac(const hsm::Mechanism& mech, const SecureBuffer& key, std::span<const std::uint8_t> data);

// Throws Error(bad_signature) unless `tag` is the whole MAC of `data`
// (compared in constant time).
void verify_mac(const hsm::Mechanism& mech, const SecureBuffer& key,
                std::span<const std::uint8_t> data, std::span<const std::uint8_t> tag);

} // namespace preloadrun::sim
