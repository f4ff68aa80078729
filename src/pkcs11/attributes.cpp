#include "attributes.hpp"

#include "mechanisms.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/ossl.hpp"

#include <cstring>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string_view>

namespace preloadrun::pkcs11 {

namespace {

const Bytes kP256Oid = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
const Bytes kP384Oid = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

Bytes bn_param(EVP_PKEY* pkey, const char* name) {
    BIGNUM* raw = nullptr;
    if (EVP_PKEY_get_bn_param(pkey, name, &raw) != 1) {
        throw Error(ErrorCode::corrupt, std::string("public key has no ") + name);
    }
    const ossl::Bignum bn(raw);
    Bytes out(static_cast<std::size_t>(BN_num_bytes(bn.get())));
    BN_bn2bin(bn.get(), out.data());
    return out;
}

// DER OCTET STRING around `content`.
Bytes der_octet_string(const Bytes& content) {
    Bytes out{0x04};
    const std::size_t n = content.size();
    if (n < 0x80) {
        out.push_back(static_cast<std::uint8_t>(n));
    } else if (n <= 0xff) {
        out.push_back(0x81);
        out.push_back(static_cast<std::uint8_t>(n));
    } else {
        out.push_back(0x82);
        out.push_back(static_cast<std::uint8_t>(n >> 8));
        out.push_back(static_cast<std::uint8_t>(n & 0xff));
    }
    out.insert(out.end(), content.begin(), content.end());
    return out;
}

Bytes ulong_bytes(CK_ULONG value) {
    Bytes out(sizeof value);
    std::memcpy(out.data(), &value, sizeof value);
    return out;
}

const CK_ATTRIBUTE* find_in(const CK_ATTRIBUTE* templ, CK_ULONG count, CK_ATTRIBUTE_TYPE type) {
    for (CK_ULONG i = 0; i < count; ++i) {
        if (templ[i].type == type) {
            return &templ[i];
        }
    }
    return nullptr;
}

} // namespace

void Attributes::set_bool(CK_ATTRIBUTE_TYPE type, bool value) {
    values_[type] = Bytes{static_cast<std::uint8_t>(value ? CK_TRUE : CK_FALSE)};
}

void Attributes::set_ulong(CK_ATTRIBUTE_TYPE type, CK_ULONG value) {
    values_[type] = ulong_bytes(value);
}

Bytes Attributes::encode() const {
    Bytes out;
    auto put = [&out](std::uint64_t v, int bytes) {
        for (int i = 0; i < bytes; ++i) {
            out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
        }
    };
    for (const auto& [type, value] : values_) {
        put(type, 8);
        put(value.size(), 4);
        out.insert(out.end(), value.begin(), value.end());
    }
    return out;
}

Attributes Attributes::decode(std::span<const std::uint8_t> bytes) {
    Attributes out;
    std::size_t at = 0;
    auto get = [&](std::size_t n) {
        if (bytes.size() - at < n) {
            throw Error(ErrorCode::corrupt, "an object's attributes end early");
        }
        std::uint64_t v = 0;
        for (std::size_t i = 0; i < n; ++i) {
            v |= std::uint64_t{bytes[at + i]} << (8 * i);
        }
        at += n;
        return v;
    };
    while (at < bytes.size()) {
        const auto type = static_cast<CK_ATTRIBUTE_TYPE>(get(8));
        const auto size = static_cast<std::size_t>(get(4));
        if (bytes.size() - at < size) {
            throw Error(ErrorCode::corrupt, "an object's attribute is longer than its content");
        }
        out.values_[type] = Bytes(bytes.begin() + static_cast<std::ptrdiff_t>(at),
                                  bytes.begin() + static_cast<std::ptrdiff_t>(at + size));
        at += size;
    }
    return out;
}

const Bytes* Attributes::find(CK_ATTRIBUTE_TYPE type) const {
    auto it = values_.find(type);
    return it == values_.end() ? nullptr : &it->second;
}

bool Attributes::matches(const CK_ATTRIBUTE* templ, CK_ULONG count) const {
    for (CK_ULONG i = 0; i < count; ++i) {
        const Bytes* have = find(templ[i].type);
        if (have == nullptr || have->size() != templ[i].ulValueLen) {
            return false;
        }
        if (!have->empty() && (templ[i].pValue == nullptr ||
                               std::memcmp(have->data(), templ[i].pValue, have->size()) != 0)) {
            return false;
        }
    }
    return true;
}

CK_RV Attributes::get(CK_ATTRIBUTE* templ, CK_ULONG count) const {
    CK_RV rv = CKR_OK;
    for (CK_ULONG i = 0; i < count; ++i) {
        CK_ATTRIBUTE& a = templ[i];
        if (sensitive_.count(a.type) != 0) {
            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_ATTRIBUTE_SENSITIVE;
            continue;
        }
        const Bytes* have = find(a.type);
        if (have == nullptr) {
            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
            continue;
        }
        if (a.pValue == nullptr) {
            a.ulValueLen = have->size();
            continue;
        }
        if (a.ulValueLen < have->size()) {
            a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_BUFFER_TOO_SMALL;
            continue;
        }
        if (!have->empty()) {
            std::memcpy(a.pValue, have->data(), have->size());
        }
        a.ulValueLen = have->size();
    }
    return rv;
}

Bytes ec_params_for(hsm::KeyType type) {
    return type == hsm::KeyType::ec_p384 ? kP384Oid : kP256Oid;
}

std::optional<hsm::KeyType> curve_from_params(const Bytes& der) {
    if (der == kP256Oid) {
        return hsm::KeyType::ec_p256;
    }
    if (der == kP384Oid) {
        return hsm::KeyType::ec_p384;
    }
    // Some callers pass the curve's name as a DER PrintableString.
    if (der.size() > 2 && der[0] == 0x13 && der[1] == der.size() - 2) {
        const std::string name(der.begin() + 2, der.end());
        if (name == "prime256v1" || name == "secp256r1" || name == "P-256") {
            return hsm::KeyType::ec_p256;
        }
        if (name == "secp384r1" || name == "P-384") {
            return hsm::KeyType::ec_p384;
        }
    }
    return std::nullopt;
}

CK_KEY_TYPE ck_key_type(hsm::KeyType type) noexcept {
    switch (type) {
    case hsm::KeyType::rsa:
        return CKK_RSA;
    case hsm::KeyType::ec_p256:
    case hsm::KeyType::ec_p384:
        return CKK_EC;
    case hsm::KeyType::aes:
        return CKK_AES;
    case hsm::KeyType::generic_secret:
        return CKK_GENERIC_SECRET;
    case hsm::KeyType::object:
        break;
    }
    return CKK_VENDOR_DEFINED;
}

PublicParts parse_public(const hsm::KeyInfo& key) {
    PublicParts parts;
    if (hsm::is_secret(key.type) || key.public_der.empty()) {
        return parts;
    }
    const unsigned char* p = key.public_der.data();
    const ossl::Pkey pkey(d2i_PUBKEY(nullptr, &p, static_cast<long>(key.public_der.size())));
    if (!pkey) {
        throw Error(ErrorCode::corrupt, "key " + key.ident + ": public key DER does not parse");
    }
    if (key.type == hsm::KeyType::rsa) {
        parts.modulus = bn_param(pkey.get(), OSSL_PKEY_PARAM_RSA_N);
        parts.public_exponent = bn_param(pkey.get(), OSSL_PKEY_PARAM_RSA_E);
        parts.modulus_bits = static_cast<CK_ULONG>(EVP_PKEY_get_bits(pkey.get()));
        return parts;
    }
    // An EC key on the curve the service names, or the attributes would
    // describe another key.
    const std::string_view curve = key.type == hsm::KeyType::ec_p384 ? "secp384r1" : "prime256v1";
    char group[64] = {};
    if (EVP_PKEY_is_a(pkey.get(), "EC") != 1 ||
        EVP_PKEY_get_utf8_string_param(pkey.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       nullptr) != 1 ||
        curve != group) {
        throw Error(ErrorCode::corrupt, "key " + key.ident + ": the public key is not an " +
                                            std::string(hsm::to_string(key.type)) + " key");
    }
    // The point straight from the SubjectPublicKeyInfo's BIT STRING: works
    // whatever provider or engine the application configured.
    const unsigned char* q = key.public_der.data();
    const ossl::Owned<X509_PUBKEY, X509_PUBKEY_free> spki(
        d2i_X509_PUBKEY(nullptr, &q, static_cast<long>(key.public_der.size())));
    const unsigned char* raw = nullptr;
    int raw_len = 0;
    if (!spki || X509_PUBKEY_get0_param(nullptr, &raw, &raw_len, nullptr, spki.get()) != 1 ||
        raw_len <= 0) {
        throw Error(ErrorCode::corrupt, "key " + key.ident + ": no EC point");
    }
    const Bytes point(raw, raw + raw_len);
    parts.ec_point = der_octet_string(point);
    parts.ec_params = ec_params_for(key.type);
    return parts;
}

namespace {

// What a private or secret key says of its secrecy. Its value is never
// readable (CKA_SENSITIVE); whether it may leave the HSMs wrapped was fixed
// when it was made; a key brought in from outside was never always secret.
void set_secrecy(Attributes& a, const hsm::KeyInfo& key, bool local) {
    a.set_bool(CKA_SENSITIVE, true);
    a.set_bool(CKA_EXTRACTABLE, key.extractable);
    a.set_bool(CKA_ALWAYS_SENSITIVE, local);
    a.set_bool(CKA_NEVER_EXTRACTABLE, local && !key.extractable);
}

} // namespace

Attributes key_attributes(const hsm::KeyInfo& key, const PublicParts& parts, CK_OBJECT_CLASS cls,
                          bool is_private) {
    Attributes a;
    const bool rsa = key.type == hsm::KeyType::rsa;
    const bool ec = key.type == hsm::KeyType::ec_p256 || key.type == hsm::KeyType::ec_p384;
    a.set_ulong(CKA_CLASS, cls);
    a.set_ulong(CKA_KEY_TYPE, ck_key_type(key.type));
    a.set_bool(CKA_TOKEN, key.persistent);
    a.set_bool(CKA_PRIVATE, is_private);
    a.set_bool(CKA_MODIFIABLE, true); // CKA_LABEL and CKA_ID (C_SetAttributeValue)
    a.set_bool(CKA_COPYABLE, false);
    a.set_bool(CKA_DESTROYABLE, true);
    a.set(CKA_LABEL, to_bytes(key.label));
    a.set(CKA_ID, key.id);
    // Made on an HSM, or brought in (imported, unwrapped, or a copy of such).
    const bool local = !key.imported;
    a.set_bool(CKA_LOCAL, local);
    a.set_bool(CKA_DERIVE, false);
    a.set(CKA_START_DATE, {});
    a.set(CKA_END_DATE, {});
    const bool generic = key.type == hsm::KeyType::generic_secret;
    a.set_ulong(CKA_KEY_GEN_MECHANISM, rsa       ? CKM_RSA_PKCS_KEY_PAIR_GEN
                                       : ec      ? CKM_EC_KEY_PAIR_GEN
                                       : generic ? CKM_GENERIC_SECRET_KEY_GEN
                                                 : CKM_AES_KEY_GEN);
    a.set(CKA_ALLOWED_MECHANISMS, allowed_mechanisms(key.type));
    if (rsa) {
        a.set(CKA_MODULUS, parts.modulus);
        a.set(CKA_PUBLIC_EXPONENT, parts.public_exponent);
    }
    if (ec) {
        a.set(CKA_EC_PARAMS, parts.ec_params);
        a.set(CKA_EC_POINT, parts.ec_point);
    }
    if (!key.public_der.empty()) {
        a.set(CKA_PUBLIC_KEY_INFO, key.public_der);
    }
    switch (cls) {
    case CKO_PUBLIC_KEY:
        a.set_bool(CKA_VERIFY, true);
        a.set_bool(CKA_VERIFY_RECOVER, false);
        a.set_bool(CKA_ENCRYPT, rsa);
        a.set_bool(CKA_WRAP, rsa); // secret keys, with CKM_RSA_PKCS(_OAEP)
        a.set_bool(CKA_TRUSTED, false);
        a.set(CKA_SUBJECT, {});
        if (rsa) {
            a.set_ulong(CKA_MODULUS_BITS, parts.modulus_bits);
        }
        break;
    case CKO_PRIVATE_KEY:
        a.set_bool(CKA_SIGN, true);
        a.set_bool(CKA_SIGN_RECOVER, false);
        a.set_bool(CKA_DECRYPT, rsa);
        a.set_bool(CKA_UNWRAP, rsa);
        set_secrecy(a, key, local);
        a.set_bool(CKA_ALWAYS_AUTHENTICATE, false);
        a.set_bool(CKA_WRAP_WITH_TRUSTED, false);
        a.set(CKA_SUBJECT, {});
        if (rsa) {
            for (auto t : {CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2, CKA_EXPONENT_1,
                           CKA_EXPONENT_2, CKA_COEFFICIENT}) {
                a.set_sensitive(t);
            }
        }
        if (ec) {
            a.set_sensitive(CKA_VALUE);
        }
        break;
    default: // CKO_SECRET_KEY: AES encrypts and MACs (CMAC), a generic secret MACs (HMAC)
        a.set_bool(CKA_ENCRYPT, !generic);
        a.set_bool(CKA_DECRYPT, !generic);
        a.set_bool(CKA_SIGN, true);
        a.set_bool(CKA_VERIFY, true);
        a.set_bool(CKA_WRAP, !generic);
        a.set_bool(CKA_UNWRAP, !generic);
        set_secrecy(a, key, local);
        a.set_bool(CKA_TRUSTED, false);
        a.set_bool(CKA_WRAP_WITH_TRUSTED, false);
        a.set_ulong(CKA_VALUE_LEN, key.bits / 8);
        if (!key.check_value.empty()) {
            a.set(CKA_CHECK_VALUE, key.check_value);
        }
        a.set_sensitive(CKA_VALUE);
        break;
    }
    return a;
}

std::optional<Bytes> template_bytes(const CK_ATTRIBUTE* templ, CK_ULONG count,
                                    CK_ATTRIBUTE_TYPE type) {
    const CK_ATTRIBUTE* a = find_in(templ, count, type);
    if (a == nullptr) {
        return std::nullopt;
    }
    if (a->ulValueLen == 0) {
        return Bytes{};
    }
    if (a->pValue == nullptr) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "template attribute without a value");
    }
    const auto* p = static_cast<const std::uint8_t*>(a->pValue);
    return Bytes(p, p + a->ulValueLen);
}

std::optional<bool> template_bool(const CK_ATTRIBUTE* templ, CK_ULONG count,
                                  CK_ATTRIBUTE_TYPE type) {
    auto v = template_bytes(templ, count, type);
    if (!v) {
        return std::nullopt;
    }
    if (v->size() != sizeof(CK_BBOOL)) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "boolean attribute of the wrong size");
    }
    return (*v)[0] != CK_FALSE;
}

std::optional<CK_ULONG> template_ulong(const CK_ATTRIBUTE* templ, CK_ULONG count,
                                       CK_ATTRIBUTE_TYPE type) {
    auto v = template_bytes(templ, count, type);
    if (!v) {
        return std::nullopt;
    }
    if (v->size() != sizeof(CK_ULONG)) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "CK_ULONG attribute of the wrong size");
    }
    CK_ULONG out = 0;
    std::memcpy(&out, v->data(), sizeof out);
    return out;
}

} // namespace preloadrun::pkcs11
