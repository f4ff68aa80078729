#pragma once
// The vocabulary of an HSM service, independent of any backend or wire format.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace preloadrun::hsm {

using ObjectHandle = std::uint64_t; // per module; 0 is never a valid handle
// Each start of an HSM service has a random instance id: a restarted service is
// a new epoch, and no handle or module generation of one epoch is ever taken
// for one of another.
inline constexpr std::size_t kServiceInstanceSize = 16;
inline constexpr std::size_t kTokenHashSize = 20;

enum class ModuleState { usable, initialising, failed, removed };
std::string_view to_string(ModuleState state) noexcept;

enum class MechanismKind {
    rsa_pkcs1,
    rsa_pss,
    rsa_oaep,
    ecdsa,
    aes_gcm,
    rsa_pkcs1_enc,
    aes_ecb,          // encrypt/decrypt whole blocks, no padding
    aes_cbc,          // iv: 16 bytes; whole blocks, no padding
    aes_cbc_pad,      // iv: 16 bytes; PKCS#7 padding
    aes_ctr,          // iv: the 16-byte counter block; counter_bits: its low bits that count
    aes_cmac,         // sign/verify the data itself (NIST SP 800-38B)
    hmac,             // sign/verify the data itself with `hash` (generic secret keys)
    aes_key_wrap,     // RFC 3394, iv: empty (the default) or 8 bytes
    aes_key_wrap_pad, // RFC 5649, iv: empty (the default) or 4 bytes
};
// RSA encryption: PKCS#1 v1.5 and OAEP.
constexpr bool is_rsa_encryption(MechanismKind kind) noexcept {
    return kind == MechanismKind::rsa_pkcs1_enc || kind == MechanismKind::rsa_oaep;
}
// The kinds a key may be wrapped and unwrapped with: AES key wrap (RFC 3394,
// 5649) and AES-CBC/ECB under an AES key, RSA PKCS#1 v1.5 and OAEP under an
// RSA key (a secret key only: a private key does not fit).
constexpr bool is_wrap(MechanismKind kind) noexcept {
    switch (kind) {
    case MechanismKind::aes_key_wrap:
    case MechanismKind::aes_key_wrap_pad:
    case MechanismKind::aes_cbc_pad:
    case MechanismKind::aes_cbc:
    case MechanismKind::aes_ecb:
    case MechanismKind::rsa_pkcs1_enc:
    case MechanismKind::rsa_oaep:
        return true;
    default:
        return false;
    }
}
// The kinds whose signature is a MAC over the data itself (not a digest).
constexpr bool is_mac(MechanismKind kind) noexcept {
    return kind == MechanismKind::aes_cmac || kind == MechanismKind::hmac;
}
// Every kind, for tables that must cover them all.
const std::vector<MechanismKind>& all_mechanism_kinds();

struct ModuleInfo {
    std::uint32_t number = 0;
    std::string esn;
    ModuleState state = ModuleState::failed;
    std::uint64_t generation = 0;
    std::uint32_t latency_ms = 0;
    std::uint64_t ops = 0;
    std::uint64_t ops_failed = 0;
    std::uint32_t objects = 0;
    std::uint32_t fail_next = 0;
    bool drained = false; // failed because the admin drained it for maintenance
    // Mechanisms it cannot do: those a member's library does not offer.
    // Empty for a simulated module (it does them all).
    std::vector<MechanismKind> lacks;
    bool operator==(const ModuleInfo&) const = default;
};

struct ModuleEvent {
    std::uint64_t sequence = 0;
    ModuleInfo module;
    ModuleState previous_state = ModuleState::failed;
    std::uint64_t previous_generation = 0;
    bool snapshot = false; // part of the initial snapshot after subscribing
};

enum class TokenType { softcard, cardset };
std::string_view to_string(TokenType type) noexcept;

struct TokenInfo {
    TokenType type = TokenType::softcard;
    std::string name;
    Bytes hash; // kTokenHashSize bytes
    bool operator==(const TokenInfo&) const = default;
};
// "softcard NAME", for messages.
std::string describe(const TokenInfo& token);

// generic_secret: CKK_GENERIC_SECRET, for HMAC; bits a multiple of 8.
// object: no key, an object kept with a token's keys (a certificate, a
// data object, a public key on its own): its content, opaque to the
// service, is its public_der; it does no cryptography.
enum class KeyType { rsa, ec_p256, ec_p384, aes, generic_secret, object };
// AES and generic secret keys: no public part.
constexpr bool is_secret(KeyType type) noexcept {
    return type == KeyType::aes || type == KeyType::generic_secret;
}
constexpr bool is_object(KeyType type) noexcept {
    return type == KeyType::object;
}
std::string_view to_string(KeyType type) noexcept;

struct KeyInfo {
    std::string ident;
    std::string label;
    Bytes id;
    KeyType type = KeyType::rsa;
    std::uint32_t bits = 0;
    bool persistent = true;
    std::optional<TokenInfo> token; // nullopt: module-protected (name may be empty in lists)
    Bytes public_der;               // SubjectPublicKeyInfo, empty for AES
    // It may leave the HSM wrapped under another key (CKA_EXTRACTABLE);
    // fixed when the key is made.
    bool extractable = false;
    // Its material came from outside the HSM (imported, or unwrapped), or
    // is a copy of such a key: not CKA_LOCAL, not CKA_NEVER_EXTRACTABLE.
    bool imported = false;
    // A secret key's check value (PKCS#11 CKA_CHECK_VALUE, 3 bytes): AES
    // encrypting a zero block, the SHA-1 of a generic secret. Empty for
    // other keys, and for secret keys made before it was kept.
    Bytes check_value;
    bool operator==(const KeyInfo&) const = default;
};

enum class Hash {
    none,
    sha1,
    sha224,
    sha256,
    sha384,
    sha512,
    sha3_224,
    sha3_256,
    sha3_384,
    sha3_512
};

// See src/wire/wire.proto for what `data` means for each kind: all hashing is
// done by the caller; the service signs digests.
struct Mechanism {
    MechanismKind kind = MechanismKind::ecdsa;
    Hash hash = Hash::none;
    Hash mgf_hash = Hash::none;
    std::uint32_t salt_len = 0;
    Bytes label;
    Bytes iv;
    Bytes aad;
    std::uint32_t tag_bits = 128;
    std::uint32_t counter_bits = 128; // AES-CTR
    bool operator==(const Mechanism&) const = default;
};

struct KeySpec {
    KeyType type = KeyType::ec_p256;
    std::uint32_t bits = 0; // RSA modulus or AES key size; 0 for EC
    std::string label;
    Bytes id;
    bool persistent = true;
    ObjectHandle token_handle = 0; // 0: module-protected
    // A persistent key only: refused when a key under the same protection has
    // the same label, or the same id when `id` is not empty.
    bool refuse_duplicate = false;
    Bytes public_exponent; // RSA, big-endian; empty: 65537
    // Not empty: import this key instead of generating one (the raw key of
    // a secret key, PKCS#8 DER of a private key).
    SecureBuffer value;
    // Not 0: copy the key loaded under this handle on the module instead
    // (C_CopyObject), under the same protection.
    ObjectHandle copy_of = 0;
    // Not 0: `value` is the key wrapped (C_WrapKey) under the key loaded
    // under this handle on the module, with `unwrap_mechanism`; the HSM
    // unwraps it (C_UnwrapKey) and keeps it as an imported key.
    ObjectHandle unwrap_with = 0;
    Mechanism unwrap_mechanism;
    bool extractable = false; // see KeyInfo::extractable
};

struct GeneratedKey {
    ObjectHandle handle = 0;
    KeyInfo key;
};

struct WorldInfo {
    Bytes world_id;
    std::uint32_t modules = 0;
};

} // namespace preloadrun::hsm
