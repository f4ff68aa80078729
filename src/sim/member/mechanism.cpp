#include "member/mechanism.hpp"

#include "preloadrun/pkcs11/hashes.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

namespace preloadrun::sim::member {

namespace {

CK_MECHANISM_TYPE hash_mechanism(hsm::Hash hash) {
    if (const auto* names = pkcs11::hash_names(hash)) {
        return names->digest;
    }
    throw Error(ErrorCode::usage, "this mechanism needs a hash");
}

CK_RSA_PKCS_MGF_TYPE mgf(hsm::Hash hash) {
    if (const auto* names = pkcs11::hash_names(hash)) {
        return names->mgf1;
    }
    throw Error(ErrorCode::usage, "this mechanism needs an MGF1 hash");
}

// The DER of DigestInfo up to the digest (RFC 8017, section 9.2, note 1).
Bytes digest_info_prefix(hsm::Hash hash) {
    switch (hash) {
    case hsm::Hash::sha1:
        return {0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e,
                0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14};
    case hsm::Hash::sha224:
        return {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x04, 0x05, 0x00, 0x04, 0x1c};
    case hsm::Hash::sha256:
        return {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    case hsm::Hash::sha384:
        return {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
    case hsm::Hash::sha512:
        return {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40};
    case hsm::Hash::sha3_224:
        return {0x30, 0x2d, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x07, 0x05, 0x00, 0x04, 0x1c};
    case hsm::Hash::sha3_256:
        return {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x08, 0x05, 0x00, 0x04, 0x20};
    case hsm::Hash::sha3_384:
        return {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x09, 0x05, 0x00, 0x04, 0x30};
    case hsm::Hash::sha3_512:
        return {0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                0x65, 0x03, 0x04, 0x02, 0x0a, 0x05, 0x00, 0x04, 0x40};
    case hsm::Hash::none:
        break;
    }
    return {};
}

bool signs(Use use) {
    return use == Use::sign || use == Use::verify;
}

} // namespace

CK_MECHANISM_TYPE mechanism_type(hsm::MechanismKind kind) {
    switch (kind) {
    case hsm::MechanismKind::rsa_pkcs1:
    case hsm::MechanismKind::rsa_pkcs1_enc:
        return CKM_RSA_PKCS;
    case hsm::MechanismKind::rsa_pss:
        return CKM_RSA_PKCS_PSS;
    case hsm::MechanismKind::rsa_oaep:
        return CKM_RSA_PKCS_OAEP;
    case hsm::MechanismKind::ecdsa:
        return CKM_ECDSA;
    case hsm::MechanismKind::aes_gcm:
        return CKM_AES_GCM;
    default:
        // The other secret-key mechanisms: a member's secret keys are not
        // found (its inventory is of key pairs), so it never does them.
        break;
    }
    return CKM_VENDOR_DEFINED;
}

std::vector<hsm::MechanismKind> lacked_kinds(std::span<const std::uint64_t> offered) {
    std::vector<hsm::MechanismKind> lacked;
    for (auto kind : hsm::all_mechanism_kinds()) {
        if (std::find(offered.begin(), offered.end(), mechanism_type(kind)) == offered.end()) {
            lacked.push_back(kind);
        }
    }
    return lacked;
}

MechanismCall::MechanismCall(const hsm::Mechanism& mech, const Bytes& data, Use use)
    : input_(data) {
    mechanism_.mechanism = mechanism_type(mech.kind);
    const bool sign_kind = mech.kind == hsm::MechanismKind::rsa_pkcs1 ||
                           mech.kind == hsm::MechanismKind::rsa_pss ||
                           mech.kind == hsm::MechanismKind::ecdsa;
    if (sign_kind != signs(use)) {
        throw Error(ErrorCode::usage,
                    signs(use) ? "not a signing mechanism" : "not an encryption mechanism");
    }
    switch (mech.kind) {
    case hsm::MechanismKind::rsa_pkcs1:
        if (mech.hash != hsm::Hash::none) {
            auto prefix = digest_info_prefix(mech.hash);
            input_.insert(input_.begin(), prefix.begin(), prefix.end());
        }
        break;
    case hsm::MechanismKind::rsa_pss:
        pss_.hashAlg = hash_mechanism(mech.hash);
        pss_.mgf = mgf(mech.mgf_hash == hsm::Hash::none ? mech.hash : mech.mgf_hash);
        pss_.sLen = mech.salt_len;
        mechanism_.pParameter = &pss_;
        mechanism_.ulParameterLen = sizeof pss_;
        break;
    case hsm::MechanismKind::rsa_oaep:
        label_ = mech.label;
        oaep_.hashAlg = hash_mechanism(mech.hash);
        oaep_.mgf = mgf(mech.mgf_hash == hsm::Hash::none ? mech.hash : mech.mgf_hash);
        oaep_.source = CKZ_DATA_SPECIFIED;
        oaep_.pSourceData = label_.empty() ? nullptr : label_.data();
        oaep_.ulSourceDataLen = label_.size();
        mechanism_.pParameter = &oaep_;
        mechanism_.ulParameterLen = sizeof oaep_;
        break;
    case hsm::MechanismKind::aes_gcm:
        iv_ = mech.iv;
        aad_ = mech.aad;
        gcm_.pIv = iv_.data();
        gcm_.ulIvLen = iv_.size();
        gcm_.ulIvBits = iv_.size() * 8;
        gcm_.pAAD = aad_.empty() ? nullptr : aad_.data();
        gcm_.ulAADLen = aad_.size();
        gcm_.ulTagBits = mech.tag_bits;
        mechanism_.pParameter = &gcm_;
        mechanism_.ulParameterLen = sizeof gcm_;
        break;
    case hsm::MechanismKind::ecdsa:
    case hsm::MechanismKind::rsa_pkcs1_enc:
        break;
    default:
        throw Error(ErrorCode::usage, "a PKCS#11 member does not do this mechanism");
    }
}

} // namespace preloadrun::sim::member
