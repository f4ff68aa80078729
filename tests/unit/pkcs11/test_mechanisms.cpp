#include "mechanisms.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::pkcs11;

TEST_CASE("pkcs11::prepare") {
    hsm::KeyInfo rsa;
    rsa.type = hsm::KeyType::rsa;
    rsa.bits = 2048;
    hsm::KeyInfo ec;
    ec.type = hsm::KeyType::ec_p384;

    SUBCASE("hashing mechanisms are hashed by the module") {
        CK_MECHANISM m{CKM_SHA256_RSA_PKCS, nullptr, 0};
        auto p = prepare(m, rsa, CKF_SIGN);
        CHECK(p.prehash == hsm::Hash::sha256);
        CHECK(p.mechanism.kind == hsm::MechanismKind::rsa_pkcs1);
        CHECK(p.mechanism.hash == hsm::Hash::sha256);
        CK_MECHANISM e{CKM_ECDSA_SHA384, nullptr, 0};
        auto q = prepare(e, ec, CKF_SIGN);
        CHECK(q.prehash == hsm::Hash::sha384);
        CHECK(q.mechanism.hash == hsm::Hash::none);
    }
    SUBCASE("PSS parameters") {
        CK_RSA_PKCS_PSS_PARAMS params{CKM_SHA384, CKG_MGF1_SHA384, 48};
        CK_MECHANISM m{CKM_RSA_PKCS_PSS, &params, sizeof params};
        auto p = prepare(m, rsa, CKF_SIGN);
        CHECK(p.mechanism.kind == hsm::MechanismKind::rsa_pss);
        CHECK(p.mechanism.hash == hsm::Hash::sha384);
        CHECK(p.mechanism.salt_len == 48);
        CK_MECHANISM bad{CKM_SHA256_RSA_PKCS_PSS, &params, sizeof params};
        CHECK_THROWS_AS(prepare(bad, rsa, CKF_SIGN), CkError);
        CK_MECHANISM none{CKM_RSA_PKCS_PSS, nullptr, 0};
        CHECK_THROWS_AS(prepare(none, rsa, CKF_SIGN), CkError);
    }
    SUBCASE("CKM_RSA_PKCS encrypts with PKCS#1 v1.5 padding") {
        CK_MECHANISM m{CKM_RSA_PKCS, nullptr, 0};
        CHECK(prepare(m, rsa, CKF_ENCRYPT).mechanism.kind == hsm::MechanismKind::rsa_pkcs1_enc);
    }
    SUBCASE("OAEP label") {
        unsigned char label[] = {1, 2, 3};
        CK_RSA_PKCS_OAEP_PARAMS params{CKM_SHA256, CKG_MGF1_SHA256, CKZ_DATA_SPECIFIED, label, 3};
        CK_MECHANISM m{CKM_RSA_PKCS_OAEP, &params, sizeof params};
        auto p = prepare(m, rsa, CKF_DECRYPT);
        CHECK(p.mechanism.label == Bytes{1, 2, 3});
    }
    SUBCASE("AES-GCM: only safe IV and tag sizes") {
        hsm::KeyInfo aes;
        aes.type = hsm::KeyType::aes;
        aes.bits = 256;
        unsigned char iv[200] = {};
        unsigned char aad[] = {'a'};
        auto gcm = [&](CK_ULONG iv_len, CK_ULONG tag_bits, CK_FLAGS purpose) {
            CK_GCM_PARAMS params{};
            params.pIv = iv;
            params.ulIvLen = iv_len;
            params.ulIvBits = 8 * iv_len;
            params.pAAD = aad;
            params.ulAADLen = sizeof aad;
            params.ulTagBits = tag_bits;
            CK_MECHANISM m{CKM_AES_GCM, &params, sizeof params};
            return prepare(m, aes, purpose);
        };
        auto refused = [&](CK_ULONG iv_len, CK_ULONG tag_bits) {
            try {
                gcm(iv_len, tag_bits, CKF_ENCRYPT);
            } catch (const CkError& e) {
                return e.rv() == CKR_MECHANISM_PARAM_INVALID ? std::string(e.what())
                                                             : std::string("wrong CK_RV");
            }
            return std::string();
        };
        const auto p = gcm(12, 96, CKF_ENCRYPT);
        CHECK(p.mechanism.iv.size() == 12);
        CHECK(p.mechanism.tag_bits == 96);
        CHECK(p.mechanism.aad == Bytes{'a'});
        CHECK(gcm(128, 128, CKF_DECRYPT).mechanism.iv.size() == 128);
        for (CK_ULONG iv_len : {0ul, 8ul, 11ul, 129ul}) {
            CHECK(refused(iv_len, 128).find("12 to 128 bytes") != std::string::npos);
        }
        for (CK_ULONG tag : {0ul, 32ul, 64ul, 100ul, 136ul, (1ul << 32) + 128}) {
            CHECK(refused(12, tag).find("96, 104, 112, 120 or 128 bits") != std::string::npos);
        }
    }
    SUBCASE("wrong key type or purpose") {
        CK_MECHANISM m{CKM_ECDSA, nullptr, 0};
        CHECK_THROWS_AS(prepare(m, rsa, CKF_SIGN), CkError);
        CHECK_THROWS_AS(prepare(m, ec, CKF_ENCRYPT), CkError);
        CK_MECHANISM unknown{CKM_MD5, nullptr, 0};
        CHECK_THROWS_AS(prepare(unknown, rsa, CKF_SIGN), CkError);
    }
    SUBCASE("signature lengths") {
        const Prepared none;
        CHECK(signature_length(none, rsa) == 256);
        CHECK(signature_length(none, ec) == 96);
    }
}

TEST_CASE("pkcs11::Digest") {
    Digest d(hsm::Hash::sha256);
    d.update(to_bytes("ab"));
    d.update(to_bytes("c"));
    CHECK(to_hex(d.finish()) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
