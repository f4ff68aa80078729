#include "member/mechanism.hpp"
#include "member/p11.hpp"
#include "member/public_key.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::sim::member;
using testsupport::code_of;

TEST_CASE("member::MechanismCall maps the service's mechanisms onto PKCS#11") {
    const Bytes digest(32, 0xab);
    hsm::Mechanism ecdsa;
    ecdsa.kind = hsm::MechanismKind::ecdsa;
    MechanismCall e(ecdsa, digest, Use::sign);
    CHECK(e.mechanism()->mechanism == CKM_ECDSA);
    CHECK(e.input() == digest);

    // The library signs a DigestInfo with CKM_RSA_PKCS: the digest is wrapped.
    hsm::Mechanism pkcs1;
    pkcs1.kind = hsm::MechanismKind::rsa_pkcs1;
    pkcs1.hash = hsm::Hash::sha256;
    MechanismCall r(pkcs1, digest, Use::sign);
    CHECK(r.mechanism()->mechanism == CKM_RSA_PKCS);
    REQUIRE(r.input().size() == 19 + 32);
    CHECK(to_hex(Bytes(r.input().begin(), r.input().begin() + 19)) ==
          "3031300d060960864801650304020105000420");

    hsm::Mechanism pss;
    pss.kind = hsm::MechanismKind::rsa_pss;
    pss.hash = hsm::Hash::sha384;
    pss.salt_len = 48;
    MechanismCall p(pss, digest, Use::verify);
    REQUIRE(p.mechanism()->ulParameterLen == sizeof(CK_RSA_PKCS_PSS_PARAMS));
    auto* params = static_cast<CK_RSA_PKCS_PSS_PARAMS*>(p.mechanism()->pParameter);
    CHECK(params->hashAlg == CKM_SHA384);
    CHECK(params->mgf == CKG_MGF1_SHA384); // the MGF hash defaults to the hash
    CHECK(params->sLen == 48);

    hsm::Mechanism oaep;
    oaep.kind = hsm::MechanismKind::rsa_oaep;
    oaep.hash = hsm::Hash::sha256;
    oaep.mgf_hash = hsm::Hash::sha1;
    oaep.label = Bytes{'l'};
    MechanismCall o(oaep, digest, Use::decrypt);
    auto* op = static_cast<CK_RSA_PKCS_OAEP_PARAMS*>(o.mechanism()->pParameter);
    CHECK(op->mgf == CKG_MGF1_SHA1);
    CHECK(op->ulSourceDataLen == 1);

    CHECK(code_of([&] { MechanismCall(ecdsa, digest, Use::encrypt); }) == ErrorCode::usage);
    CHECK(code_of([&] { MechanismCall(oaep, digest, Use::sign); }) == ErrorCode::usage);
}

TEST_CASE("member::error_of: what a CK_RV means for the member and the caller") {
    CHECK(error_of(CKR_DEVICE_REMOVED, "m", "C_Sign", "").code() == ErrorCode::module_not_usable);
    CHECK(error_of(CKR_SESSION_HANDLE_INVALID, "m", "C_Sign", "").code() ==
          ErrorCode::module_not_usable);
    CHECK(error_of(CKR_USER_NOT_LOGGED_IN, "m", "C_Sign", "").code() ==
          ErrorCode::module_not_usable);
    CHECK(error_of(CKR_CRYPTOKI_NOT_INITIALIZED, "m", "C_Sign", "").code() ==
          ErrorCode::module_not_usable);
    CHECK(error_of(CKR_PIN_INCORRECT, "m", "C_Login", "").code() == ErrorCode::wrong_passphrase);
    CHECK(error_of(CKR_PIN_LOCKED, "m", "C_Login", "").code() == ErrorCode::too_many_attempts);
    CHECK(error_of(CKR_SIGNATURE_INVALID, "m", "C_Verify", "").code() == ErrorCode::bad_signature);
    CHECK(error_of(CKR_MECHANISM_INVALID, "m", "C_SignInit", "").code() == ErrorCode::crypto);
    CHECK(std::string(error_of(CKR_DEVICE_ERROR, "hsm-a", "C_Sign", "x").what()) ==
          "member hsm-a: C_Sign returned CKR_DEVICE_ERROR: x");
    CHECK(rv_name(0x12345) == "CKR_0x00012345");
}

TEST_CASE("member public keys: RSA and EC as SubjectPublicKeyInfo") {
    CHECK_FALSE(rsa_public_key({}, {1, 0, 1}));
    auto rsa = rsa_public_key(Bytes(256, 0xc3), {1, 0, 1});
    REQUIRE(rsa);
    CHECK(rsa->bits == 2048);
    const Bytes p256{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CHECK(ec_curve_bits(p256) == 256u);
    CHECK_FALSE(ec_curve_bits(Bytes{0x06, 0x01, 0x00}));
    CHECK_FALSE(ec_public_key(p256, Bytes(65, 0x04))); // not a point on the curve
}
