#include "member/public_key.hpp"

#include "preloadrun/common/ossl.hpp"

#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>

namespace preloadrun::sim::member {

namespace {

using ParamBld = ossl::Owned<OSSL_PARAM_BLD, OSSL_PARAM_BLD_free>;
using Params = ossl::Owned<OSSL_PARAM, OSSL_PARAM_free>;
using Asn1Object = ossl::Owned<ASN1_OBJECT, ASN1_OBJECT_free>;
using OctetString = ossl::Owned<ASN1_OCTET_STRING, ASN1_OCTET_STRING_free>;

std::optional<Bytes> spki_of(const char* type, const OSSL_PARAM* params) {
    ossl::PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
    EVP_PKEY* raw = nullptr;
    if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
        EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, const_cast<OSSL_PARAM*>(params)) !=
            1) {
        return std::nullopt;
    }
    ossl::Pkey key(raw);
    unsigned char* der = nullptr;
    int length = i2d_PUBKEY(key.get(), &der);
    if (length <= 0) {
        return std::nullopt;
    }
    Bytes out(der, der + length);
    OPENSSL_free(der);
    return out;
}

// The point inside a DER OCTET STRING, or `point` itself when it is not one.
Bytes bare_point(const Bytes& point) {
    const unsigned char* p = point.data();
    OctetString octets(d2i_ASN1_OCTET_STRING(nullptr, &p, static_cast<long>(point.size())));
    if (octets && p == point.data() + point.size()) {
        const auto* data = ASN1_STRING_get0_data(octets.get());
        return Bytes(data, data + ASN1_STRING_length(octets.get()));
    }
    return point;
}

} // namespace

std::optional<PublicKey> rsa_public_key(const Bytes& modulus, const Bytes& exponent) {
    ossl::Bignum n(BN_bin2bn(modulus.data(), static_cast<int>(modulus.size()), nullptr));
    ossl::Bignum e(BN_bin2bn(exponent.data(), static_cast<int>(exponent.size()), nullptr));
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!n || !e || !bld || BN_is_zero(n.get()) || BN_is_zero(e.get()) ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
        OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
        return std::nullopt;
    }
    Params params(OSSL_PARAM_BLD_to_param(bld.get()));
    auto spki = params ? spki_of("RSA", params.get()) : std::nullopt;
    if (!spki) {
        return std::nullopt;
    }
    return PublicKey{std::move(*spki), static_cast<std::uint32_t>(BN_num_bits(n.get())), false};
}

std::optional<std::uint32_t> ec_curve_bits(const Bytes& params) {
    const unsigned char* p = params.data();
    Asn1Object oid(d2i_ASN1_OBJECT(nullptr, &p, static_cast<long>(params.size())));
    if (!oid) {
        return std::nullopt;
    }
    switch (OBJ_obj2nid(oid.get())) {
    case NID_X9_62_prime256v1:
        return 256;
    case NID_secp384r1:
        return 384;
    default:
        return std::nullopt;
    }
}

std::optional<PublicKey> ec_public_key(const Bytes& params_der, const Bytes& point) {
    const auto bits = ec_curve_bits(params_der);
    if (!bits) {
        return std::nullopt;
    }
    const bool p384 = *bits == 384;
    auto bare = bare_point(point);
    ParamBld bld(OSSL_PARAM_BLD_new());
    if (!bld ||
        OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME,
                                        p384 ? "secp384r1" : "prime256v1", 0) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, bare.data(),
                                         bare.size()) != 1) {
        return std::nullopt;
    }
    Params params(OSSL_PARAM_BLD_to_param(bld.get()));
    auto spki = params ? spki_of("EC", params.get()) : std::nullopt;
    if (!spki) {
        return std::nullopt;
    }
    return PublicKey{std::move(*spki), p384 ? 384u : 256u, p384};
}

} // namespace preloadrun::sim::member
