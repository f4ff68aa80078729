// libFuzzer target: the public part of a key as the PKCS#11 module receives
// it from the HSM service (a SubjectPublicKeyInfo in DER, and the key type
// the service claims), decoded into the attributes the application reads
// (pkcs11/attributes.hpp), and CKA_EC_PARAMS as an application passes it.
// Anything but preloadrun::Error escaping, a crash, a sanitizer report, or
// attributes that do not describe the key that was decoded is a bug.
//
// Input: one byte naming the key type (the tag of kTypes; any other byte
// picks a type too), then the DER.

#include "attributes.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/ossl.hpp"

#include <cstdlib>
#include <iterator>
#include <memory>
#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <vector>

namespace {

namespace hsm = preloadrun::hsm;
namespace pkcs11 = preloadrun::pkcs11;
using preloadrun::Bytes;

void check(bool ok) {
    if (!ok) {
        std::abort();
    }
}

struct Type {
    char tag;
    hsm::KeyType type;
};

constexpr Type kTypes[] = {
    {'r', hsm::KeyType::rsa},
    {'p', hsm::KeyType::ec_p256},
    {'q', hsm::KeyType::ec_p384},
    {'a', hsm::KeyType::aes},
};

hsm::KeyType type_of(std::uint8_t tag) {
    for (const auto& type : kTypes) {
        if (type.tag == tag) {
            return type.type;
        }
    }
    return kTypes[tag % std::size(kTypes)].type;
}

// CKA_EC_POINT: a DER OCTET STRING, all of it, around the SPKI's point.
void check_ec_point(const Bytes& der) {
    const unsigned char* p = der.data();
    ASN1_OCTET_STRING* point = d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(der.size()));
    check(point != nullptr && p == der.data() + der.size());
    ASN1_OCTET_STRING_free(point);
}

// The key decoded is of the type the attributes say.
void check_type(const hsm::KeyInfo& key, const pkcs11::PublicParts& parts) {
    const unsigned char* p = key.public_der.data();
    const preloadrun::ossl::Pkey pkey(
        d2i_PUBKEY(nullptr, &p, static_cast<long>(key.public_der.size())));
    check(pkey != nullptr);
    if (key.type == hsm::KeyType::rsa) {
        check(EVP_PKEY_is_a(pkey.get(), "RSA") && !parts.modulus.empty());
        return;
    }
    char group[64] = {};
    check(EVP_PKEY_is_a(pkey.get(), "EC") &&
          EVP_PKEY_get_utf8_string_param(pkey.get(), "group", group, sizeof group, nullptr));
    check(std::string_view(group) ==
          (key.type == hsm::KeyType::ec_p256 ? "prime256v1" : "secp384r1"));
    check(pkcs11::curve_from_params(parts.ec_params) == key.type);
    check_ec_point(parts.ec_point);
}

// Every attribute can be read: its length, then its value.
void read_all(const pkcs11::Attributes& attributes) {
    for (CK_ATTRIBUTE_TYPE type = 0; type <= CKA_WRAP_WITH_TRUSTED; ++type) {
        CK_ATTRIBUTE query{type, nullptr, 0};
        if (attributes.get(&query, 1) != CKR_OK) {
            continue;
        }
        std::vector<std::uint8_t> value(query.ulValueLen);
        CK_ATTRIBUTE read{type, value.data(), value.size()};
        check(attributes.get(&read, 1) == CKR_OK && read.ulValueLen == value.size());
        check(attributes.matches(&read, 1));
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    hsm::KeyInfo key;
    key.ident = "fuzz";
    key.type = type_of(data[0]);
    key.bits = 256;
    key.token = hsm::TokenInfo{hsm::TokenType::softcard, "card", Bytes(hsm::kTokenHashSize, 1)};
    key.public_der.assign(data + 1, data + size);

    (void)pkcs11::curve_from_params(key.public_der); // CKA_EC_PARAMS from an application
    try {
        const auto parts = pkcs11::parse_public(key);
        if (key.type == hsm::KeyType::aes) {
            read_all(pkcs11::key_attributes(key, parts, CKO_SECRET_KEY, true));
            return 0;
        }
        if (!key.public_der.empty()) {
            check_type(key, parts);
        }
        read_all(pkcs11::key_attributes(key, parts, CKO_PRIVATE_KEY, true));
        read_all(pkcs11::key_attributes(key, parts, CKO_PUBLIC_KEY, false));
    } catch (const preloadrun::Error&) {
        // Refusing a public key that does not decode is the expected outcome.
    }
    return 0;
}
