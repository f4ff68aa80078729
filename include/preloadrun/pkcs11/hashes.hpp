#pragma once
// The hashes of hsm::Hash under their PKCS#11 names: the digest mechanism
// (CKM_SHA256, ...) and the MGF1 generator (CKG_MGF1_SHA256, ...). One table
// for the module (PKCS#11 to hsm) and for the fleet's members (hsm to
// PKCS#11). Header-only.

#include "preloadrun/hsm/types.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"

#include <array>
#include <optional>

namespace preloadrun::pkcs11 {

struct HashNames {
    hsm::Hash hash;
    CK_MECHANISM_TYPE digest;
    CK_RSA_PKCS_MGF_TYPE mgf1;
};

inline constexpr std::array<HashNames, 9> kHashNames{{
    {hsm::Hash::sha1, CKM_SHA_1, CKG_MGF1_SHA1},
    {hsm::Hash::sha224, CKM_SHA224, CKG_MGF1_SHA224},
    {hsm::Hash::sha256, CKM_SHA256, CKG_MGF1_SHA256},
    {hsm::Hash::sha384, CKM_SHA384, CKG_MGF1_SHA384},
    {hsm::Hash::sha512, CKM_SHA512, CKG_MGF1_SHA512},
    {hsm::Hash::sha3_224, CKM_SHA3_224, CKG_MGF1_SHA3_224},
    {hsm::Hash::sha3_256, CKM_SHA3_256, CKG_MGF1_SHA3_256},
    {hsm::Hash::sha3_384, CKM_SHA3_384, CKG_MGF1_SHA3_384},
    {hsm::Hash::sha3_512, CKM_SHA3_512, CKG_MGF1_SHA3_512},
}};

// nullptr for Hash::none.
constexpr const HashNames* hash_names(hsm::Hash hash) {
    for (const auto& names : kHashNames) {
        if (names.hash == hash) {
            return &names;
        }
    }
    return nullptr;
}

constexpr std::optional<hsm::Hash> hash_of_digest(CK_MECHANISM_TYPE digest) {
    for (const auto& names : kHashNames) {
        if (names.digest == digest) {
            return names.hash;
        }
    }
    return std::nullopt;
}

constexpr std::optional<hsm::Hash> hash_of_mgf1(CK_RSA_PKCS_MGF_TYPE mgf) {
    for (const auto& names : kHashNames) {
        if (names.mgf1 == mgf) {
            return names.hash;
        }
    }
    return std::nullopt;
}

} // namespace preloadrun::pkcs11
