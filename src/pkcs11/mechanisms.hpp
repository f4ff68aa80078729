#pragma once
// The mechanisms the module offers: the table behind C_GetMechanismList/Info,
// and the translation of a CK_MECHANISM (with its parameters) into what the
// HSM service is asked. The service signs digests: for the hashing
// mechanisms (CKM_SHA256_RSA_PKCS, CKM_ECDSA_SHA256, ...) the module hashes.

#include "ck.hpp"
#include "preloadrun/hsm/types.hpp"

#include <memory>
#include <span>
#include <vector>

namespace preloadrun::pkcs11 {

struct MechanismSpec {
    CK_MECHANISM_TYPE type;
    CK_FLAGS flags;    // CKF_SIGN, CKF_ENCRYPT, ... plus CKF_HW
    CK_ULONG min_size; // bits for RSA and EC, bytes for AES (PKCS#11 v2.40)
    CK_ULONG max_size;
    hsm::KeyType family; // rsa, ec_p256 (any EC), aes, generic_secret
    hsm::MechanismKind kind;
    hsm::Hash prehash;                // hashed by the module first
    hsm::Hash hmac = hsm::Hash::none; // the HMAC mechanisms: their hash
    bool general = false;             // *_GENERAL MACs: CK_MAC_GENERAL_PARAMS, a length
};

const std::vector<MechanismSpec>& mechanism_table();
// nullptr when not offered.
const MechanismSpec* find_mechanism(CK_MECHANISM_TYPE type);
// CKA_ALLOWED_MECHANISMS of a key of `type`: the mechanisms of the table
// that use such a key (not the generation ones), as CK_MECHANISM_TYPEs.
Bytes allowed_mechanisms(hsm::KeyType type);

// What to ask the service for one operation.
struct Prepared {
    const MechanismSpec* spec = nullptr;
    hsm::Mechanism mechanism;
    hsm::Hash prehash = hsm::Hash::none;
    std::size_t mac_length = 0; // MACs: the bytes of the MAC kept (a prefix)
};

// `purpose` is one of CKF_SIGN, CKF_VERIFY, CKF_ENCRYPT, CKF_DECRYPT, CKF_WRAP,
// CKF_UNWRAP (of the wrapping key). Throws
// CkError: CKR_MECHANISM_INVALID, CKR_MECHANISM_PARAM_INVALID,
// CKR_KEY_TYPE_INCONSISTENT, CKR_KEY_FUNCTION_NOT_PERMITTED.
Prepared prepare(const CK_MECHANISM& mechanism, const hsm::KeyInfo& key, CK_FLAGS purpose);

// The digest mechanisms (C_DigestInit): done in the application's process
// with OpenSSL, on no HSM. CKM_MD5, CKM_SHA_1, the SHA-2 family and SHA-3.
struct DigestSpec {
    CK_MECHANISM_TYPE type;
    const char* openssl_name;
};
const std::vector<DigestSpec>& digest_table();
const DigestSpec* find_digest(CK_MECHANISM_TYPE type); // nullptr: not offered

// Incremental hashing for the hashing mechanisms and C_Digest*.
class Digest {
public:
    explicit Digest(hsm::Hash hash);
    explicit Digest(const DigestSpec& spec);
    std::size_t size() const; // of the digest, in bytes
    Digest(Digest&&) noexcept;
    Digest& operator=(Digest&&) noexcept;
    ~Digest();
    void update(std::span<const std::uint8_t> data);
    Bytes finish();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

// Length of a signature made by `key` (RSA: modulus bytes, EC: 2 x field;
// a MAC: its length).
std::size_t signature_length(const Prepared& prepared, const hsm::KeyInfo& key);

} // namespace preloadrun::pkcs11
