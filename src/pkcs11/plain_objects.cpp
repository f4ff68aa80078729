#include "plain_objects.hpp"

#include "preloadrun/common/ossl.hpp"

#include <cstring>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <optional>

namespace preloadrun::pkcs11 {

namespace {

using X509Ptr = ossl::Owned<X509, X509_free>;

template <class T> Bytes der_of(T* object, int (*encode)(T*, unsigned char**)) {
    const int len = encode(object, nullptr);
    if (len <= 0) {
        return {};
    }
    Bytes out(static_cast<std::size_t>(len));
    unsigned char* p = out.data();
    encode(object, &p);
    return out;
}

int encode_name(X509_NAME* name, unsigned char** out) {
    return i2d_X509_NAME(name, out);
}
int encode_integer(ASN1_INTEGER* n, unsigned char** out) {
    return i2d_ASN1_INTEGER(n, out);
}
int encode_pubkey(X509_PUBKEY* key, unsigned char** out) {
    return i2d_X509_PUBKEY(key, out);
}

void set_default(Attributes& a, CK_ATTRIBUTE_TYPE type, Bytes value) {
    if (a.find(type) == nullptr) {
        a.set(type, std::move(value));
    }
}

Bytes bool_bytes(bool v) {
    return Bytes{static_cast<std::uint8_t>(v ? CK_TRUE : CK_FALSE)};
}

Bytes ulong_bytes(CK_ULONG v) {
    Bytes out(sizeof v);
    std::memcpy(out.data(), &v, sizeof v);
    return out;
}

const Bytes& required(const Attributes& a, CK_ATTRIBUTE_TYPE type, const char* name) {
    const Bytes* v = a.find(type);
    if (v == nullptr) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, std::string(name) + " is needed");
    }
    return *v;
}

CK_ULONG ulong_of(const Bytes& v, const char* name) {
    if (v.size() != sizeof(CK_ULONG)) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, std::string(name) + " is a CK_ULONG");
    }
    CK_ULONG out = 0;
    std::memcpy(&out, v.data(), sizeof out);
    return out;
}

bool is_true(const Attributes& a, CK_ATTRIBUTE_TYPE type) {
    const Bytes* v = a.find(type);
    return v != nullptr && v->size() == 1 && (*v)[0] != CK_FALSE;
}

void certificate(Attributes& a) {
    if (ulong_of(required(a, CKA_CERTIFICATE_TYPE, "CKA_CERTIFICATE_TYPE"),
                 "CKA_CERTIFICATE_TYPE") != CKC_X_509) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "only X.509 certificates (CKC_X_509)");
    }
    if (is_true(a, CKA_TRUSTED)) {
        throw CkError(CKR_ATTRIBUTE_READ_ONLY, "CKA_TRUSTED is the security officer's to set, "
                                               "and the tokens have none");
    }
    const Bytes& der = required(a, CKA_VALUE, "CKA_VALUE");
    const unsigned char* p = der.data();
    const X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
    if (!cert || p != der.data() + der.size()) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "CKA_VALUE is not a DER X.509 certificate");
    }
    // What the certificate says, unless the template says it.
    set_default(a, CKA_SUBJECT, der_of(X509_get_subject_name(cert.get()), encode_name));
    set_default(a, CKA_ISSUER, der_of(X509_get_issuer_name(cert.get()), encode_name));
    set_default(a, CKA_SERIAL_NUMBER, der_of(X509_get_serialNumber(cert.get()), encode_integer));
    set_default(a, CKA_PUBLIC_KEY_INFO, der_of(X509_get_X509_PUBKEY(cert.get()), encode_pubkey));
    unsigned char sha1[SHA_DIGEST_LENGTH];
    SHA1(der.data(), der.size(), sha1);
    a.set(CKA_CHECK_VALUE, Bytes(sha1, sha1 + 3));
    set_default(a, CKA_ID, {});
    set_default(a, CKA_TRUSTED, bool_bytes(false));
    set_default(a, CKA_CERTIFICATE_CATEGORY, ulong_bytes(0));
    set_default(a, CKA_JAVA_MIDP_SECURITY_DOMAIN, ulong_bytes(0));
    set_default(a, CKA_START_DATE, {});
    set_default(a, CKA_END_DATE, {});
    set_default(a, CKA_URL, {});
    set_default(a, CKA_HASH_OF_SUBJECT_PUBLIC_KEY, {});
    set_default(a, CKA_HASH_OF_ISSUER_PUBLIC_KEY, {});
}

// An EC point as PKCS#11 gives it: a DER OCTET STRING around the point
// (some callers give the bare point).
Bytes ec_point_bytes(const Bytes& v) {
    if (v.size() > 2 && v[0] == 0x04) {
        std::size_t len = v[1];
        std::size_t header = 2;
        if (v[1] == 0x81 && v.size() > 3) {
            len = v[2];
            header = 3;
        }
        if (header + len == v.size() && len > 0 &&
            (v[header] == 0x04 || v[header] == 0x02 || v[header] == 0x03)) {
            return Bytes(v.begin() + static_cast<std::ptrdiff_t>(header), v.end());
        }
    }
    return v;
}

Bytes spki_from_params(const char* type, OSSL_PARAM_BLD* bld) {
    ossl::Owned<OSSL_PARAM, OSSL_PARAM_free> params(OSSL_PARAM_BLD_to_param(bld));
    ossl::PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
    EVP_PKEY* raw = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, std::string("not an ") + type + " public key");
    }
    const ossl::Pkey pkey(raw);
    if (std::string_view(type) == "EC") {
        ossl::PkeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
        if (!check || EVP_PKEY_public_check(check.get()) != 1) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "CKA_EC_POINT is not on the curve");
        }
    }
    const int len = i2d_PUBKEY(pkey.get(), nullptr);
    if (len <= 0) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "the public key does not encode");
    }
    Bytes out(static_cast<std::size_t>(len));
    unsigned char* p = out.data();
    i2d_PUBKEY(pkey.get(), &p);
    return out;
}

void public_key(Attributes& a) {
    const CK_ULONG type = ulong_of(required(a, CKA_KEY_TYPE, "CKA_KEY_TYPE"), "CKA_KEY_TYPE");
    ossl::Owned<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free> bld(OSSL_PARAM_BLD_new());
    if (!bld) {
        throw CkError(CKR_HOST_MEMORY, "out of memory");
    }
    if (type == CKK_RSA) {
        const Bytes& n = required(a, CKA_MODULUS, "CKA_MODULUS");
        const Bytes& e = required(a, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT");
        ossl::Bignum bn_n(BN_bin2bn(n.data(), static_cast<int>(n.size()), nullptr));
        ossl::Bignum bn_e(BN_bin2bn(e.data(), static_cast<int>(e.size()), nullptr));
        if (!bn_n || !bn_e ||
            OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
            OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "not an RSA public key");
        }
        const auto bits = static_cast<CK_ULONG>(BN_num_bits(bn_n.get()));
        a.set(CKA_PUBLIC_KEY_INFO, spki_from_params("RSA", bld.get()));
        a.set(CKA_MODULUS_BITS, ulong_bytes(bits));
        set_default(a, CKA_ENCRYPT, bool_bytes(true));
    } else if (type == CKK_EC) {
        const auto curve = curve_from_params(required(a, CKA_EC_PARAMS, "CKA_EC_PARAMS"));
        if (!curve) {
            throw CkError(CKR_CURVE_NOT_SUPPORTED, "only P-256 and P-384 are supported");
        }
        const Bytes point = ec_point_bytes(required(a, CKA_EC_POINT, "CKA_EC_POINT"));
        const char* group = *curve == hsm::KeyType::ec_p384 ? "P-384" : "P-256";
        if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
            OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                             point.size()) != 1) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "not an EC public key");
        }
        a.set(CKA_PUBLIC_KEY_INFO, spki_from_params("EC", bld.get()));
        set_default(a, CKA_ENCRYPT, bool_bytes(false));
    } else {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "public keys are CKK_RSA or CKK_EC");
    }
    set_default(a, CKA_ID, {});
    set_default(a, CKA_SUBJECT, {});
    set_default(a, CKA_VERIFY, bool_bytes(true));
    set_default(a, CKA_VERIFY_RECOVER, bool_bytes(false));
    set_default(a, CKA_WRAP, bool_bytes(false));
    set_default(a, CKA_DERIVE, bool_bytes(false));
    set_default(a, CKA_TRUSTED, bool_bytes(false));
    set_default(a, CKA_START_DATE, {});
    set_default(a, CKA_END_DATE, {});
    a.set(CKA_LOCAL, bool_bytes(false));
    a.set(CKA_KEY_GEN_MECHANISM, ulong_bytes(CK_UNAVAILABLE_INFORMATION));
}

using SecretBn = ossl::Owned<BIGNUM, BN_clear_free>;

// A big-endian number of the template; nullopt when absent.
SecretBn template_bn(const CK_ATTRIBUTE* templ, CK_ULONG count, CK_ATTRIBUTE_TYPE type,
                     const char* name, bool needed) {
    for (CK_ULONG i = 0; i < count; ++i) {
        if (templ[i].type != type) {
            continue;
        }
        if (templ[i].pValue == nullptr || templ[i].ulValueLen == 0 || templ[i].ulValueLen > 1024) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, std::string(name) + " is not a number");
        }
        SecretBn bn(BN_bin2bn(static_cast<const unsigned char*>(templ[i].pValue),
                              static_cast<int>(templ[i].ulValueLen), nullptr));
        if (!bn) {
            throw CkError(CKR_HOST_MEMORY, "out of memory");
        }
        return bn;
    }
    if (needed) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, std::string(name) + " is needed");
    }
    return SecretBn(nullptr);
}

SecureBuffer pkcs8_of(const char* type, OSSL_PARAM_BLD* bld) {
    ossl::Owned<OSSL_PARAM, OSSL_PARAM_free> params(OSSL_PARAM_BLD_to_param(bld));
    ossl::PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
    EVP_PKEY* raw = nullptr;
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params.get()) != 1) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, std::string("not an ") + type + " private key");
    }
    const ossl::Pkey pkey(raw);
    ossl::PkeyCtx check(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey.get(), nullptr));
    if (!check || EVP_PKEY_pairwise_check(check.get()) != 1) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID,
                      std::string("the ") + type + " private key is not consistent");
    }
    ossl::Owned<PKCS8_PRIV_KEY_INFO, PKCS8_PRIV_KEY_INFO_free> p8(EVP_PKEY2PKCS8(pkey.get()));
    const int len = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8.get(), nullptr) : 0;
    if (len <= 0) {
        throw CkError(CKR_FUNCTION_FAILED, "the private key does not encode");
    }
    SecureBuffer out(static_cast<std::size_t>(len));
    unsigned char* p = out.data();
    i2d_PKCS8_PRIV_KEY_INFO(p8.get(), &p);
    return out;
}

} // namespace

SecureBuffer private_key_pkcs8(const CK_ATTRIBUTE* templ, CK_ULONG count, hsm::KeyType& type,
                               std::uint32_t& bits) {
    CK_ULONG key_type = 0;
    bool found = false;
    for (CK_ULONG i = 0; i < count; ++i) {
        if (templ[i].type == CKA_KEY_TYPE && templ[i].pValue != nullptr &&
            templ[i].ulValueLen == sizeof key_type) {
            std::memcpy(&key_type, templ[i].pValue, sizeof key_type);
            found = true;
        }
    }
    if (!found) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_KEY_TYPE is needed");
    }
    ossl::Owned<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free> bld(OSSL_PARAM_BLD_new());
    if (!bld) {
        throw CkError(CKR_HOST_MEMORY, "out of memory");
    }
    if (key_type == CKK_RSA) {
        auto n = template_bn(templ, count, CKA_MODULUS, "CKA_MODULUS", true);
        auto e = template_bn(templ, count, CKA_PUBLIC_EXPONENT, "CKA_PUBLIC_EXPONENT", true);
        auto d = template_bn(templ, count, CKA_PRIVATE_EXPONENT, "CKA_PRIVATE_EXPONENT", true);
        auto p = template_bn(templ, count, CKA_PRIME_1, "CKA_PRIME_1", false);
        auto q = template_bn(templ, count, CKA_PRIME_2, "CKA_PRIME_2", false);
        auto dp = template_bn(templ, count, CKA_EXPONENT_1, "CKA_EXPONENT_1", false);
        auto dq = template_bn(templ, count, CKA_EXPONENT_2, "CKA_EXPONENT_2", false);
        auto qinv = template_bn(templ, count, CKA_COEFFICIENT, "CKA_COEFFICIENT", false);
        bool ok = OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) == 1 &&
                  OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) == 1 &&
                  OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_D, d.get()) == 1;
        if (p && q && dp && dq && qinv) {
            ok = ok &&
                 OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_FACTOR1, p.get()) == 1 &&
                 OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_FACTOR2, q.get()) == 1 &&
                 OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_EXPONENT1, dp.get()) == 1 &&
                 OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_EXPONENT2, dq.get()) == 1 &&
                 OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_COEFFICIENT1, qinv.get()) ==
                     1;
        }
        if (!ok) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "not an RSA private key");
        }
        const int n_bits = BN_num_bits(n.get());
        if (n_bits < 1024 || n_bits > 4096 || n_bits % 8 != 0) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "RSA keys are 1024 to 4096 bits");
        }
        type = hsm::KeyType::rsa;
        bits = static_cast<std::uint32_t>(n_bits);
        return pkcs8_of("RSA", bld.get());
    }
    if (key_type != CKK_EC) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "private keys are CKK_RSA or CKK_EC");
    }
    std::optional<hsm::KeyType> curve;
    for (CK_ULONG i = 0; i < count; ++i) {
        if (templ[i].type == CKA_EC_PARAMS && templ[i].pValue != nullptr) {
            const auto* v = static_cast<const std::uint8_t*>(templ[i].pValue);
            curve = curve_from_params(Bytes(v, v + templ[i].ulValueLen));
        }
    }
    if (!curve) {
        throw CkError(CKR_CURVE_NOT_SUPPORTED, "CKA_EC_PARAMS: P-256 or P-384 is needed");
    }
    auto d = template_bn(templ, count, CKA_VALUE, "CKA_VALUE", true);
    const int nid = *curve == hsm::KeyType::ec_p384 ? NID_secp384r1 : NID_X9_62_prime256v1;
    ossl::Owned<EC_GROUP, EC_GROUP_free> group(EC_GROUP_new_by_curve_name(nid));
    ossl::Owned<EC_POINT, EC_POINT_free> point(group ? EC_POINT_new(group.get()) : nullptr);
    unsigned char pub[1 + 2 * 48];
    std::size_t pub_len = 0;
    if (!group || !point ||
        EC_POINT_mul(group.get(), point.get(), d.get(), nullptr, nullptr, nullptr) != 1 ||
        (pub_len = EC_POINT_point2oct(group.get(), point.get(), POINT_CONVERSION_UNCOMPRESSED, pub,
                                      sizeof pub, nullptr)) == 0) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "CKA_VALUE is not a private key of the curve");
    }
    const char* name = *curve == hsm::KeyType::ec_p384 ? "P-384" : "P-256";
    if (OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, name, 0) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_PRIV_KEY, d.get()) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len) != 1) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "not an EC private key");
    }
    type = *curve;
    bits = 0;
    return pkcs8_of("EC", bld.get());
}

bool is_plain_class(CK_OBJECT_CLASS cls) noexcept {
    return cls == CKO_DATA || cls == CKO_CERTIFICATE || cls == CKO_PUBLIC_KEY;
}

std::optional<hsm::KeyInfo> public_key_of(const Attributes& a) {
    const Bytes* cls = a.find(CKA_CLASS);
    const Bytes* type = a.find(CKA_KEY_TYPE);
    const Bytes* spki = a.find(CKA_PUBLIC_KEY_INFO);
    if (cls == nullptr || ulong_of(*cls, "CKA_CLASS") != CKO_PUBLIC_KEY || type == nullptr ||
        spki == nullptr) {
        return std::nullopt;
    }
    hsm::KeyInfo key;
    key.public_der = *spki;
    const CK_ULONG key_type = ulong_of(*type, "CKA_KEY_TYPE");
    if (key_type == CKK_RSA) {
        const Bytes* bits = a.find(CKA_MODULUS_BITS);
        if (bits == nullptr) {
            return std::nullopt;
        }
        key.type = hsm::KeyType::rsa;
        key.bits = static_cast<std::uint32_t>(ulong_of(*bits, "CKA_MODULUS_BITS"));
        return key;
    }
    const Bytes* params = a.find(CKA_EC_PARAMS);
    const auto curve =
        key_type == CKK_EC && params != nullptr ? curve_from_params(*params) : std::nullopt;
    if (!curve) {
        return std::nullopt;
    }
    key.type = *curve;
    key.bits = *curve == hsm::KeyType::ec_p256 ? 256 : 384;
    return key;
}

bool plain_attribute_modifiable(CK_OBJECT_CLASS cls, CK_ATTRIBUTE_TYPE type) noexcept {
    switch (type) {
    case CKA_LABEL:
    case CKA_ID:
    case CKA_START_DATE:
    case CKA_END_DATE:
    case CKA_SUBJECT:
        return true;
    case CKA_APPLICATION:
    case CKA_OBJECT_ID:
    case CKA_VALUE:
        return cls == CKO_DATA;
    default:
        return false;
    }
}

Attributes plain_object_attributes(const CK_ATTRIBUTE* templ, CK_ULONG count, CK_OBJECT_CLASS cls) {
    Attributes a;
    for (CK_ULONG i = 0; i < count; ++i) {
        if (templ[i].ulValueLen != 0 && templ[i].pValue == nullptr) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "template attribute without a value");
        }
        if (templ[i].ulValueLen > kMaxObjectContent) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "an attribute longer than " +
                                                           std::to_string(kMaxObjectContent) +
                                                           " bytes");
        }
        const auto* p = static_cast<const std::uint8_t*>(templ[i].pValue);
        a.set(templ[i].type, p == nullptr ? Bytes{} : Bytes(p, p + templ[i].ulValueLen));
    }
    a.set(CKA_CLASS, ulong_bytes(cls));
    for (auto flag : {CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE, CKA_COPYABLE, CKA_DESTROYABLE}) {
        if (const Bytes* v = a.find(flag); v != nullptr && v->size() != 1) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "a boolean attribute of the wrong size");
        }
    }
    set_default(a, CKA_TOKEN, bool_bytes(false));
    set_default(a, CKA_PRIVATE, bool_bytes(false));
    set_default(a, CKA_MODIFIABLE, bool_bytes(true));
    set_default(a, CKA_COPYABLE, bool_bytes(true));
    set_default(a, CKA_DESTROYABLE, bool_bytes(true));
    set_default(a, CKA_LABEL, {});
    switch (cls) {
    case CKO_DATA:
        set_default(a, CKA_APPLICATION, {});
        set_default(a, CKA_OBJECT_ID, {});
        set_default(a, CKA_VALUE, {});
        break;
    case CKO_CERTIFICATE:
        certificate(a);
        break;
    case CKO_PUBLIC_KEY:
        public_key(a);
        break;
    default:
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "objects of this class cannot be created");
    }
    return a;
}

} // namespace preloadrun::pkcs11
