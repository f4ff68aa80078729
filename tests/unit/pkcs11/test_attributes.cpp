#include "attributes.hpp"
#include "preloadrun/common/error.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <memory>
#include <openssl/evp.h>
#include <openssl/x509.h>

using namespace preloadrun;
using namespace preloadrun::pkcs11;

namespace {
Bytes spki(const char* algorithm, const char* param) {
    EVP_PKEY* key = param != nullptr
                        ? EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm, param)
                        : EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm, std::size_t{2048});
    REQUIRE(key != nullptr);
    unsigned char* der = nullptr;
    const int len = i2d_PUBKEY(key, &der);
    Bytes out(der, der + len);
    OPENSSL_free(der);
    EVP_PKEY_free(key);
    return out;
}
} // namespace

TEST_CASE("pkcs11::key_attributes") {
    SUBCASE("EC public parts") {
        hsm::KeyInfo k;
        k.ident = "e1";
        k.type = hsm::KeyType::ec_p256;
        k.label = "lbl";
        k.id = {1, 2};
        k.public_der = spki("EC", "P-256");
        const auto parts = parse_public(k);
        CHECK(parts.ec_params == ec_params_for(hsm::KeyType::ec_p256));
        REQUIRE(parts.ec_point.size() == 67);
        CHECK(parts.ec_point[0] == 0x04);
        CHECK(parts.ec_point[1] == 65);
        auto priv = key_attributes(k, parts, CKO_PRIVATE_KEY, true);
        CK_BBOOL t = CK_TRUE;
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE match[] = {
            {CKA_CLASS, &cls, sizeof cls}, {CKA_ID, k.id.data(), k.id.size()}, {CKA_SIGN, &t, 1}};
        CHECK(priv.matches(match, 3));
        unsigned char other_id = 9;
        CK_ATTRIBUTE nomatch[] = {{CKA_ID, &other_id, 1}};
        CHECK_FALSE(priv.matches(nomatch, 1));
        CK_ATTRIBUTE value{CKA_VALUE, nullptr, 0};
        CHECK(priv.get(&value, 1) == CKR_ATTRIBUTE_SENSITIVE);
        CHECK(value.ulValueLen == CK_UNAVAILABLE_INFORMATION);
        // A sensitive attribute never matches a template.
        unsigned char x = 0;
        CK_ATTRIBUTE sens[] = {{CKA_VALUE, &x, 1}};
        CHECK_FALSE(priv.matches(sens, 1));
    }
    SUBCASE("RSA public parts and buffer conventions") {
        hsm::KeyInfo k;
        k.ident = "r1";
        k.type = hsm::KeyType::rsa;
        k.bits = 2048;
        k.public_der = spki("RSA", nullptr);
        const auto parts = parse_public(k);
        CHECK(parts.modulus.size() == 256);
        CHECK(parts.public_exponent == Bytes{1, 0, 1});
        auto pub = key_attributes(k, parts, CKO_PUBLIC_KEY, false);
        CK_ATTRIBUTE a{CKA_MODULUS, nullptr, 0};
        CHECK(pub.get(&a, 1) == CKR_OK);
        CHECK(a.ulValueLen == 256);
        Bytes small(10);
        a.pValue = small.data();
        a.ulValueLen = small.size();
        CHECK(pub.get(&a, 1) == CKR_BUFFER_TOO_SMALL);
        CHECK(a.ulValueLen == CK_UNAVAILABLE_INFORMATION);
        CK_ATTRIBUTE unknown{CKA_EC_POINT, nullptr, 0};
        CHECK(pub.get(&unknown, 1) == CKR_ATTRIBUTE_TYPE_INVALID);
        CK_ULONG bits = 0;
        CK_ATTRIBUTE mb{CKA_MODULUS_BITS, &bits, sizeof bits};
        CHECK(pub.get(&mb, 1) == CKR_OK);
        CHECK(bits == 2048);
    }
    SUBCASE("a public key of another type than the key's is refused") {
        // What the HSM service says the key is and the SubjectPublicKeyInfo
        // it sends must agree: otherwise the attributes would describe
        // another key (an RSA key's bytes as CKA_EC_POINT, say).
        const Bytes rsa = spki("RSA", nullptr);
        const Bytes p256 = spki("EC", "P-256");
        const Bytes p384 = spki("EC", "P-384");
        const std::pair<hsm::KeyType, const Bytes*> wrong[] = {
            {hsm::KeyType::ec_p256, &rsa},  {hsm::KeyType::ec_p384, &rsa},
            {hsm::KeyType::ec_p256, &p384}, {hsm::KeyType::ec_p384, &p256},
            {hsm::KeyType::rsa, &p256},
        };
        for (const auto& [type, der] : wrong) {
            hsm::KeyInfo k;
            k.ident = "x1";
            k.type = type;
            k.public_der = *der;
            CAPTURE(hsm::to_string(type));
            CHECK_THROWS_AS(parse_public(k), Error);
        }
    }
    SUBCASE("curves by OID or name") {
        CHECK(curve_from_params(ec_params_for(hsm::KeyType::ec_p384)) == hsm::KeyType::ec_p384);
        Bytes name = {0x13, 10};
        for (char c : std::string("prime256v1")) {
            name.push_back(static_cast<std::uint8_t>(c));
        }
        CHECK(curve_from_params(name) == hsm::KeyType::ec_p256);
        CHECK_FALSE(curve_from_params(Bytes{0x06, 0x01, 0x00}).has_value());
    }
}
