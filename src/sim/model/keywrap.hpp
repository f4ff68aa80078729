#pragma once
// Secrets at rest: random bytes, the passphrase KDF (PBKDF2-HMAC-SHA256) and
// key wrapping (AES-256-GCM with a purpose-binding AAD, so that a wrapped blob
// moved to another file or another purpose no longer unwraps).

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace preloadrun::sim {

inline constexpr std::uint32_t kDefaultKdfIterations = 100000;
inline constexpr std::size_t kKdfSaltSize = 16;
inline constexpr std::size_t kWrapKeySize = 32; // AES-256
inline constexpr std::size_t kWrapIvSize = 12;
inline constexpr std::size_t kWrapTagSize = 16;

// Cryptographically strong random bytes. Throws Error(crypto).
Bytes random_bytes(std::size_t size);
SecureBuffer random_secret(std::size_t size);

Bytes sha256(std::span<const std::uint8_t> data);

// PBKDF2-HMAC-SHA256 of the passphrase, kWrapKeySize bytes.
SecureBuffer derive_key(const SecureBuffer& passphrase, std::span<const std::uint8_t> salt,
                        std::uint32_t iterations);

// iv (12) || ciphertext || tag (16), under a 32-byte key; `aad` names the
// purpose and the owner of the blob (for example "hsmsim key <ident>").
Bytes wrap(const SecureBuffer& kek, std::span<const std::uint8_t> plaintext, std::string_view aad);
// Throws Error(crypto) when the blob is malformed, or was made under another
// key or another aad (the caller says what that means: wrong passphrase, corrupt).
SecureBuffer unwrap(const SecureBuffer& kek, std::span<const std::uint8_t> blob,
                    std::string_view aad);

} // namespace preloadrun::sim
