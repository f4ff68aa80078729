#include "mechanisms.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/digest.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"
#include "preloadrun/pkcs11/hashes.hpp"

#include <algorithm>
#include <cstring>
#include <openssl/err.h>
#include <openssl/evp.h>

namespace preloadrun::pkcs11 {

namespace {

using hsm::Hash;
using hsm::KeyType;
using hsm::MechanismKind;

constexpr CK_FLAGS kSignVerify = CKF_HW | CKF_SIGN | CKF_VERIFY;
constexpr CK_FLAGS kEncDec = CKF_HW | CKF_ENCRYPT | CKF_DECRYPT;
// The mechanisms that also wrap and unwrap keys (C_WrapKey, C_UnwrapKey).
constexpr CK_FLAGS kWrap = CKF_WRAP | CKF_UNWRAP;
// Generic secrets: 1 to 512 bytes.
constexpr CK_ULONG kSecretMin = 1;
constexpr CK_ULONG kSecretMax = 512;

const std::vector<MechanismSpec> kTable = {
    {CKM_RSA_PKCS_KEY_PAIR_GEN, CKF_HW | CKF_GENERATE_KEY_PAIR, 1024, 4096, KeyType::rsa,
     MechanismKind::rsa_pkcs1, Hash::none},
    {CKM_EC_KEY_PAIR_GEN,
     CKF_HW | CKF_GENERATE_KEY_PAIR | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS, 256, 384,
     KeyType::ec_p256, MechanismKind::ecdsa, Hash::none},
    {CKM_AES_KEY_GEN, CKF_HW | CKF_GENERATE, 16, 32, KeyType::aes, MechanismKind::aes_gcm,
     Hash::none},
    {CKM_RSA_PKCS, kSignVerify | kEncDec | kWrap, 1024, 4096, KeyType::rsa,
     MechanismKind::rsa_pkcs1, Hash::none},
    {CKM_SHA1_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha1},
    {CKM_SHA224_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha224},
    {CKM_SHA256_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha256},
    {CKM_SHA384_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha384},
    {CKM_SHA512_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha512},
    {CKM_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss, Hash::none},
    {CKM_SHA1_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha1},
    {CKM_SHA224_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha224},
    {CKM_SHA256_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha256},
    {CKM_SHA384_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha384},
    {CKM_SHA512_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha512},
    {CKM_RSA_PKCS_OAEP, kEncDec | kWrap, 1024, 4096, KeyType::rsa, MechanismKind::rsa_oaep,
     Hash::none},
    {CKM_ECDSA, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa, Hash::none},
    {CKM_ECDSA_SHA1, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa, Hash::sha1},
    {CKM_ECDSA_SHA224, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa, Hash::sha224},
    {CKM_ECDSA_SHA256, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa, Hash::sha256},
    {CKM_ECDSA_SHA384, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa, Hash::sha384},
    {CKM_ECDSA_SHA512, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa, Hash::sha512},
    {CKM_SHA3_224_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha3_224},
    {CKM_SHA3_256_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha3_256},
    {CKM_SHA3_384_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha3_384},
    {CKM_SHA3_512_RSA_PKCS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pkcs1,
     Hash::sha3_512},
    {CKM_SHA3_224_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha3_224},
    {CKM_SHA3_256_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha3_256},
    {CKM_SHA3_384_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha3_384},
    {CKM_SHA3_512_RSA_PKCS_PSS, kSignVerify, 1024, 4096, KeyType::rsa, MechanismKind::rsa_pss,
     Hash::sha3_512},
    {CKM_ECDSA_SHA3_224, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa,
     Hash::sha3_224},
    {CKM_ECDSA_SHA3_256, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa,
     Hash::sha3_256},
    {CKM_ECDSA_SHA3_384, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa,
     Hash::sha3_384},
    {CKM_ECDSA_SHA3_512, kSignVerify, 256, 384, KeyType::ec_p256, MechanismKind::ecdsa,
     Hash::sha3_512},
    {CKM_AES_GCM, kEncDec, 16, 32, KeyType::aes, MechanismKind::aes_gcm, Hash::none},
    {CKM_AES_ECB, kEncDec | kWrap, 16, 32, KeyType::aes, MechanismKind::aes_ecb, Hash::none},
    {CKM_AES_CBC, kEncDec | kWrap, 16, 32, KeyType::aes, MechanismKind::aes_cbc, Hash::none},
    {CKM_AES_CBC_PAD, kEncDec | kWrap, 16, 32, KeyType::aes, MechanismKind::aes_cbc_pad,
     Hash::none},
    {CKM_AES_CTR, kEncDec, 16, 32, KeyType::aes, MechanismKind::aes_ctr, Hash::none},
    {CKM_AES_KEY_WRAP, kEncDec | kWrap, 16, 32, KeyType::aes, MechanismKind::aes_key_wrap,
     Hash::none},
    {CKM_AES_KEY_WRAP_PAD, kEncDec | kWrap, 16, 32, KeyType::aes, MechanismKind::aes_key_wrap_pad,
     Hash::none},
    {CKM_AES_CMAC, kSignVerify, 16, 32, KeyType::aes, MechanismKind::aes_cmac, Hash::none},
    {CKM_AES_CMAC_GENERAL, kSignVerify, 16, 32, KeyType::aes, MechanismKind::aes_cmac, Hash::none,
     Hash::none, true},
    {CKM_GENERIC_SECRET_KEY_GEN, CKF_HW | CKF_GENERATE, kSecretMin, kSecretMax,
     KeyType::generic_secret, MechanismKind::hmac, Hash::none},
    {CKM_SHA_1_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha1},
    {CKM_SHA_1_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha1, true},
    {CKM_SHA224_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha224},
    {CKM_SHA224_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha224, true},
    {CKM_SHA256_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha256},
    {CKM_SHA256_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha256, true},
    {CKM_SHA384_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha384},
    {CKM_SHA384_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha384, true},
    {CKM_SHA512_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha512},
    {CKM_SHA512_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha512, true},
    {CKM_SHA3_224_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_224},
    {CKM_SHA3_224_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_224, true},
    {CKM_SHA3_256_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_256},
    {CKM_SHA3_256_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_256, true},
    {CKM_SHA3_384_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_384},
    {CKM_SHA3_384_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_384, true},
    {CKM_SHA3_512_HMAC, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_512},
    {CKM_SHA3_512_HMAC_GENERAL, kSignVerify, kSecretMin, kSecretMax, KeyType::generic_secret,
     MechanismKind::hmac, Hash::none, Hash::sha3_512, true},
};

bool same_family(KeyType family, KeyType key) {
    if (family == KeyType::ec_p256) {
        return key == KeyType::ec_p256 || key == KeyType::ec_p384;
    }
    return family == key;
}

Hash hash_of(CK_MECHANISM_TYPE type) {
    if (auto hash = hash_of_digest(type)) {
        return *hash;
    }
    throw CkError(CKR_MECHANISM_PARAM_INVALID, "unsupported hash in mechanism parameters");
}

Hash mgf_of(CK_RSA_PKCS_MGF_TYPE mgf) {
    if (auto hash = hash_of_mgf1(mgf)) {
        return *hash;
    }
    throw CkError(CKR_MECHANISM_PARAM_INVALID, "unsupported MGF in mechanism parameters");
}

template <class T> const T& params_as(const CK_MECHANISM& m) {
    if (m.pParameter == nullptr || m.ulParameterLen != sizeof(T)) {
        throw CkError(CKR_MECHANISM_PARAM_INVALID, "mechanism parameters of the wrong size");
    }
    return *static_cast<const T*>(m.pParameter);
}

Bytes bytes_of(const void* p, CK_ULONG len) {
    if (len == 0) {
        return {};
    }
    if (p == nullptr) {
        throw CkError(CKR_MECHANISM_PARAM_INVALID, "parameter data pointer is NULL");
    }
    const auto* b = static_cast<const std::uint8_t*>(p);
    return Bytes(b, b + len);
}

const EVP_MD* md_of(Hash hash) {
    if (const EVP_MD* md = hsm::evp_md(hash)) {
        return md;
    }
    throw Error(ErrorCode::internal, "no digest for this hash");
}

} // namespace

const std::vector<MechanismSpec>& mechanism_table() {
    return kTable;
}

const MechanismSpec* find_mechanism(CK_MECHANISM_TYPE type) {
    for (const auto& spec : kTable) {
        if (spec.type == type) {
            return &spec;
        }
    }
    return nullptr;
}

Bytes allowed_mechanisms(hsm::KeyType type) {
    Bytes out;
    constexpr CK_FLAGS kUses = CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT;
    for (const auto& spec : kTable) {
        if ((spec.flags & kUses) != 0 && same_family(spec.family, type)) {
            const auto* p = reinterpret_cast<const std::uint8_t*>(&spec.type);
            out.insert(out.end(), p, p + sizeof spec.type);
        }
    }
    return out;
}

Prepared prepare(const CK_MECHANISM& m, const hsm::KeyInfo& key, CK_FLAGS purpose) {
    const MechanismSpec* spec = find_mechanism(m.mechanism);
    if (spec == nullptr || (spec->flags & purpose) == 0) {
        throw CkError(CKR_MECHANISM_INVALID, "mechanism not offered for this operation");
    }
    if (!same_family(spec->family, key.type)) {
        throw CkError(CKR_KEY_TYPE_INCONSISTENT, "mechanism does not fit the key type");
    }
    Prepared out;
    out.spec = spec;
    out.prehash = spec->prehash;
    auto& mech = out.mechanism;
    mech.kind = spec->kind;
    const bool encrypting = (purpose & (CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP)) != 0;
    switch (spec->kind) {
    case MechanismKind::rsa_pkcs1:
        if (encrypting) {
            mech.kind = MechanismKind::rsa_pkcs1_enc;
        } else {
            mech.hash = spec->prehash;
        }
        break;
    case MechanismKind::rsa_pss: {
        const auto& p = params_as<CK_RSA_PKCS_PSS_PARAMS>(m);
        mech.hash = hash_of(p.hashAlg);
        mech.mgf_hash = mgf_of(p.mgf);
        mech.salt_len = static_cast<std::uint32_t>(p.sLen);
        if (spec->prehash != Hash::none && spec->prehash != mech.hash) {
            throw CkError(CKR_MECHANISM_PARAM_INVALID, "PSS hashAlg differs from the mechanism's");
        }
        break;
    }
    case MechanismKind::rsa_oaep: {
        const auto& p = params_as<CK_RSA_PKCS_OAEP_PARAMS>(m);
        mech.hash = hash_of(p.hashAlg);
        mech.mgf_hash = mgf_of(p.mgf);
        if (p.source == CKZ_DATA_SPECIFIED) {
            mech.label = bytes_of(p.pSourceData, p.ulSourceDataLen);
        } else if (p.source != 0) {
            throw CkError(CKR_MECHANISM_PARAM_INVALID, "unknown OAEP source");
        }
        break;
    }
    case MechanismKind::ecdsa:
        mech.hash = Hash::none; // the service gets the digest either way
        break;
    case MechanismKind::aes_gcm: {
        const auto& p = params_as<CK_GCM_PARAMS>(m);
        const auto tag_bits = static_cast<std::uint32_t>(std::min<CK_ULONG>(p.ulTagBits, 0xffff));
        if (auto problem = hsm::gcm_parameter_problem(p.ulIvLen, tag_bits); !problem.empty()) {
            throw CkError(CKR_MECHANISM_PARAM_INVALID, problem);
        }
        mech.iv = bytes_of(p.pIv, p.ulIvLen);
        mech.aad = bytes_of(p.pAAD, p.ulAADLen);
        mech.tag_bits = tag_bits;
        break;
    }
    case MechanismKind::rsa_pkcs1_enc:
        break;
    case MechanismKind::aes_ecb:
        break; // no parameter (one given is ignored, as by other modules)
    case MechanismKind::aes_cbc:
    case MechanismKind::aes_cbc_pad:
    case MechanismKind::aes_key_wrap:
    case MechanismKind::aes_key_wrap_pad:
        if (m.ulParameterLen > hsm::kAesBlock) {
            throw CkError(CKR_MECHANISM_PARAM_INVALID, "an IV of at most 16 bytes");
        }
        mech.iv = bytes_of(m.pParameter, m.ulParameterLen);
        break;
    case MechanismKind::aes_ctr: {
        const auto& p = params_as<CK_AES_CTR_PARAMS>(m);
        mech.iv.assign(std::begin(p.cb), std::end(p.cb));
        mech.counter_bits = static_cast<std::uint32_t>(std::min<CK_ULONG>(p.ulCounterBits, 0xffff));
        break;
    }
    case MechanismKind::aes_cmac:
    case MechanismKind::hmac: {
        mech.hash = spec->hmac;
        const std::size_t full =
            spec->kind == MechanismKind::aes_cmac ? 16 : EVP_MD_get_size(md_of(spec->hmac));
        out.mac_length = full;
        if (spec->general) {
            const auto length = params_as<CK_MAC_GENERAL_PARAMS>(m);
            if (length == 0 || length > full) {
                throw CkError(CKR_MECHANISM_PARAM_INVALID,
                              "a MAC length of 1 to " + std::to_string(full) + " bytes");
            }
            out.mac_length = length;
        }
        break;
    }
    }
    if (auto problem = hsm::mechanism_parameter_problem(mech); !problem.empty()) {
        throw CkError(CKR_MECHANISM_PARAM_INVALID, problem);
    }
    return out;
}

const std::vector<DigestSpec>& digest_table() {
    static const std::vector<DigestSpec> table = [] {
        const std::vector<DigestSpec> all{{CKM_MD5, "MD5"},
                                          {CKM_SHA_1, "SHA1"},
                                          {CKM_SHA224, "SHA224"},
                                          {CKM_SHA256, "SHA256"},
                                          {CKM_SHA384, "SHA384"},
                                          {CKM_SHA512, "SHA512"},
                                          {CKM_SHA512_224, "SHA512-224"},
                                          {CKM_SHA512_256, "SHA512-256"},
                                          {CKM_SHA3_224, "SHA3-224"},
                                          {CKM_SHA3_256, "SHA3-256"},
                                          {CKM_SHA3_384, "SHA3-384"},
                                          {CKM_SHA3_512, "SHA3-512"}};
        // What this OpenSSL has (MD5 is gone under a FIPS configuration).
        std::vector<DigestSpec> present;
        for (const auto& spec : all) {
            if (EVP_MD* md = EVP_MD_fetch(nullptr, spec.openssl_name, nullptr)) {
                EVP_MD_free(md);
                present.push_back(spec);
            }
        }
        ERR_clear_error();
        return present;
    }();
    return table;
}

const DigestSpec* find_digest(CK_MECHANISM_TYPE type) {
    for (const auto& spec : digest_table()) {
        if (spec.type == type) {
            return &spec;
        }
    }
    return nullptr;
}

struct Digest::Impl {
    EVP_MD_CTX* ctx = nullptr;
    EVP_MD* fetched = nullptr;
    ~Impl() {
        EVP_MD_CTX_free(ctx);
        EVP_MD_free(fetched);
    }
};

Digest::Digest(const DigestSpec& spec) : impl_(std::make_unique<Impl>()) {
    impl_->fetched = EVP_MD_fetch(nullptr, spec.openssl_name, nullptr);
    impl_->ctx = EVP_MD_CTX_new();
    if (impl_->fetched == nullptr || impl_->ctx == nullptr ||
        EVP_DigestInit_ex(impl_->ctx, impl_->fetched, nullptr) != 1) {
        throw Error(ErrorCode::crypto,
                    std::string("cannot start a ") + spec.openssl_name + " digest");
    }
}

std::size_t Digest::size() const {
    return static_cast<std::size_t>(EVP_MD_CTX_get_size(impl_->ctx));
}

Digest::Digest(hsm::Hash hash) : impl_(std::make_unique<Impl>()) {
    impl_->ctx = EVP_MD_CTX_new();
    if (impl_->ctx == nullptr || EVP_DigestInit_ex(impl_->ctx, md_of(hash), nullptr) != 1) {
        throw Error(ErrorCode::crypto, "cannot start a digest");
    }
}
Digest::Digest(Digest&&) noexcept = default;
Digest& Digest::operator=(Digest&&) noexcept = default;
Digest::~Digest() = default;

void Digest::update(std::span<const std::uint8_t> data) {
    if (!data.empty() && EVP_DigestUpdate(impl_->ctx, data.data(), data.size()) != 1) {
        throw Error(ErrorCode::crypto, "digest update failed");
    }
}

Bytes Digest::finish() {
    Bytes out(EVP_MAX_MD_SIZE);
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(impl_->ctx, out.data(), &len) != 1) {
        throw Error(ErrorCode::crypto, "digest failed");
    }
    out.resize(len);
    return out;
}

std::size_t signature_length(const Prepared& prepared, const hsm::KeyInfo& key) {
    if (hsm::is_mac(prepared.mechanism.kind)) {
        return prepared.mac_length;
    }
    switch (key.type) {
    case KeyType::rsa:
        return (key.bits + 7) / 8;
    case KeyType::ec_p256:
        return 64;
    case KeyType::ec_p384:
        return 96;
    case KeyType::aes:
    case KeyType::generic_secret:
    case KeyType::object:
        break;
    }
    return 0;
}

} // namespace preloadrun::pkcs11
