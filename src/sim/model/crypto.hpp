#pragma once
// Real key material and the mechanisms hsmsim serves (OpenSSL 3 EVP only).
// The service signs digests: all hashing is done by the caller (see wire.proto).

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <cstdint>
#include <memory>
#include <span>
#include <string>

struct evp_pkey_st;

namespace preloadrun::sim {

inline constexpr std::uint32_t kRsaMinBits = 1024;
inline constexpr std::uint32_t kRsaMaxBits = 4096;
inline constexpr std::uint32_t kRsaDefaultBits = 2048;
inline constexpr std::uint32_t kAesDefaultBits = 256;
inline constexpr std::uint32_t kGenericSecretDefaultBits = 256;
inline constexpr std::uint32_t kGenericSecretMaxBits = 4096;
// The content of an object (hsm::KeyType::object): a certificate and its
// attributes fit many times over.
inline constexpr std::size_t kMaxObjectBytes = 32 * 1024;

// The key size `bits` means for `type` (0 picks the default: RSA 2048, the
// curve's size, AES 256). Throws Error(usage) for a size the type cannot have.
std::uint32_t normalise_bits(hsm::KeyType type, std::uint32_t bits);

// "RSA-2048", "EC P-256", "AES-256".
std::string describe(hsm::KeyType type, std::uint32_t bits);

// One key: an asymmetric key pair (RSA, EC) or a secret (AES, generic). Immutable once
// made, so one Key may serve several threads.
class Key {
public:
    // Throws Error(usage) for a bad size, Error(crypto) if OpenSSL fails.
    // `public_exponent`: RSA only, big-endian; empty for 65537.
    static Key generate(hsm::KeyType type, std::uint32_t bits, const Bytes& public_exponent = {});
    // From private_bytes(); throws Error(corrupt) if they do not form a key of
    // that type and size.
    static Key from_private(hsm::KeyType type, std::uint32_t bits,
                            std::span<const std::uint8_t> private_bytes);
    // A key a client brings (GenerateKey.value): as from_private(), but
    // what does not form such a key is the client's error (Error(usage)).
    static Key import(hsm::KeyType type, std::uint32_t bits, const SecureBuffer& value);
    // The public half alone, from SubjectPublicKeyInfo DER (RSA, EC P-256,
    // P-384): verifies and encrypts. Error(usage) for anything else.
    static Key from_public(std::span<const std::uint8_t> der);
    // An unwrapped key (C_UnwrapKey): as import(), but `bits` 0 takes the
    // size the key has, and an EC type takes the key's own curve.
    static Key import_unwrapped(hsm::KeyType type, std::uint32_t bits, const SecureBuffer& value);

    hsm::KeyType type() const noexcept { return type_; }
    std::uint32_t bits() const noexcept { return bits_; }

    // PKCS#8 PrivateKeyInfo DER for RSA/EC, the raw key for AES and generic secrets.
    SecureBuffer private_bytes() const;
    // SubjectPublicKeyInfo DER; empty for AES.
    Bytes public_der() const;
    // hsm::KeyInfo::check_value: 3 bytes for a secret key, else empty.
    Bytes check_value() const;

    // Mechanism/key mismatches and bad parameters throw Error(usage);
    // OpenSSL refusing the data throws Error(crypto); verify() throws
    // Error(bad_signature) when the signature does not match.
    Bytes sign(const hsm::Mechanism& mech, std::span<const std::uint8_t> data) const;
    void verify(const hsm::Mechanism& mech, std::span<const std::uint8_t> data,
                std::span<const std::uint8_t> signature) const;
    Bytes encrypt(const hsm::Mechanism& mech, std::span<const std::uint8_t> data) const;
    Bytes decrypt(const hsm::Mechanism& mech, std::span<const std::uint8_t> data) const;

private:
    // An ECDSA signing context, made at the first signature and kept: OpenSSL
    // 3 looks the algorithm up again for every new context, a good part of
    // what a signature costs. One signature uses it at a time (a concurrent
    // one makes its own); copies of a Key share it, as they share the key.
    struct SignContext;

    Key(hsm::KeyType type, std::uint32_t bits);
    evp_pkey_st* pkey() const noexcept { return pkey_.get(); }
    Bytes ecdsa_sign(std::span<const std::uint8_t> digest) const;
    // AES-CMAC takes an AES key, HMAC a generic secret.
    bool mac_fits(hsm::MechanismKind kind) const noexcept;

    hsm::KeyType type_;
    std::uint32_t bits_;
    std::shared_ptr<evp_pkey_st> pkey_; // RSA, EC
    std::shared_ptr<SignContext> ec_sign_;
    SecureBuffer secret_; // AES, generic secret
};

} // namespace preloadrun::sim
