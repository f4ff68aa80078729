#include "model/crypto.hpp"

#include "model/ossl.hpp"
#include "model/private_key_der.hpp"
#include "model/symmetric.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/digest.hpp"

#include <climits>
#include <cstring>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

namespace preloadrun::sim {

namespace {

using hsm::Hash;
using hsm::KeyType;
using hsm::Mechanism;
using hsm::MechanismKind;
using Span = std::span<const std::uint8_t>;

const char* curve_name(KeyType type) {
    return type == KeyType::ec_p256 ? "P-256" : "P-384";
}

std::uint32_t curve_bits(KeyType type) {
    return type == KeyType::ec_p256 ? 256 : 384;
}

const EVP_MD* md_of(Hash hash) {
    return hsm::evp_md(hash);
}

std::string_view mech_name(MechanismKind kind) {
    switch (kind) {
    case MechanismKind::rsa_pkcs1:
        return "RSA PKCS#1 v1.5";
    case MechanismKind::rsa_pss:
        return "RSA-PSS";
    case MechanismKind::rsa_oaep:
        return "RSA-OAEP";
    case MechanismKind::ecdsa:
        return "ECDSA";
    case MechanismKind::aes_gcm:
        return "AES-GCM";
    case MechanismKind::rsa_pkcs1_enc:
        return "RSA PKCS#1 v1.5 encryption";
    case MechanismKind::aes_ecb:
        return "AES-ECB";
    case MechanismKind::aes_cbc:
        return "AES-CBC";
    case MechanismKind::aes_cbc_pad:
        return "AES-CBC-PAD";
    case MechanismKind::aes_ctr:
        return "AES-CTR";
    case MechanismKind::aes_cmac:
        return "AES-CMAC";
    case MechanismKind::hmac:
        return "HMAC";
    case MechanismKind::aes_key_wrap:
        return "AES key wrap";
    case MechanismKind::aes_key_wrap_pad:
        return "AES key wrap with padding";
    }
    return "unknown mechanism";
}

int to_int(std::size_t size, std::string_view what) {
    if (size > static_cast<std::size_t>(INT_MAX)) {
        throw Error(ErrorCode::usage, std::string(what) + " too large");
    }
    return static_cast<int>(size);
}

void check_digest(const EVP_MD* md, Span data) {
    if (md == nullptr) {
        return;
    }
    auto want = static_cast<std::size_t>(EVP_MD_get_size(md));
    if (data.size() != want) {
        throw Error(ErrorCode::usage, std::string("data must be a ") + EVP_MD_get0_name(md) +
                                          " digest of " + std::to_string(want) + " bytes, got " +
                                          std::to_string(data.size()));
    }
}

ossl::PkeyCtx context_for(EVP_PKEY* pkey) {
    ossl::PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey, nullptr));
    if (!ctx) {
        ossl::fail(ErrorCode::crypto, "cannot create a key context");
    }
    return ctx;
}

// Padding and digests of an RSA signature operation (ctx already initialised).
void setup_rsa_signature(EVP_PKEY_CTX* ctx, const Mechanism& mech, Span data) {
    if (mech.kind == MechanismKind::rsa_pkcs1) {
        if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1) {
            ossl::fail(ErrorCode::crypto, "cannot set PKCS#1 padding");
        }
        if (const EVP_MD* md = md_of(mech.hash)) {
            check_digest(md, data);
            if (EVP_PKEY_CTX_set_signature_md(ctx, md) != 1) {
                ossl::fail(ErrorCode::usage, "RSA PKCS#1 v1.5 refuses this hash");
            }
        }
        return;
    }
    const EVP_MD* md = md_of(mech.hash);
    if (md == nullptr) {
        throw Error(ErrorCode::usage, "RSA-PSS needs a hash (the data is its digest)");
    }
    check_digest(md, data);
    const EVP_MD* mgf = mech.mgf_hash == Hash::none ? md : md_of(mech.mgf_hash);
    if (mech.salt_len > static_cast<std::uint32_t>(INT_MAX)) {
        throw Error(ErrorCode::usage, "RSA-PSS salt length too large");
    }
    if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(ctx, md) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, mgf) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, static_cast<int>(mech.salt_len)) != 1) {
        ossl::fail(ErrorCode::usage, "RSA-PSS refuses these parameters");
    }
}

void setup_rsa_encryption(EVP_PKEY_CTX* ctx, const Mechanism& mech) {
    if (mech.kind == MechanismKind::rsa_pkcs1_enc) {
        if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) != 1) {
            ossl::fail(ErrorCode::crypto, "cannot set PKCS#1 padding");
        }
        return;
    }
    const EVP_MD* md = mech.hash == Hash::none ? EVP_sha1() : md_of(mech.hash);
    const EVP_MD* mgf = mech.mgf_hash == Hash::none ? md : md_of(mech.mgf_hash);
    if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, md) != 1 || EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, mgf) != 1) {
        ossl::fail(ErrorCode::usage, "RSA-OAEP refuses these parameters");
    }
    if (!mech.label.empty()) {
        auto* label = static_cast<unsigned char*>(OPENSSL_malloc(mech.label.size()));
        if (label == nullptr) {
            throw Error(ErrorCode::crypto, "out of memory");
        }
        std::memcpy(label, mech.label.data(), mech.label.size());
        if (EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, label, to_int(mech.label.size(), "label")) != 1) {
            OPENSSL_free(label);
            ossl::fail(ErrorCode::usage, "RSA-OAEP refuses this label");
        }
    }
}

std::size_t ec_field_size(std::uint32_t bits) {
    return (bits + 7) / 8;
}

Bytes der_to_raw_ecdsa(Span der, std::size_t field) {
    const unsigned char* p = der.data();
    ossl::EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
    if (!sig) {
        ossl::fail(ErrorCode::crypto, "cannot decode the ECDSA signature");
    }
    Bytes out(2 * field);
    if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), out.data(), static_cast<int>(field)) < 0 ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), out.data() + field, static_cast<int>(field)) <
            0) {
        ossl::fail(ErrorCode::crypto, "cannot encode the ECDSA signature");
    }
    return out;
}

// Empty when `raw` is not r||s of the right width.
Bytes raw_to_der_ecdsa(Span raw, std::size_t field) {
    if (raw.size() != 2 * field) {
        return {};
    }
    ossl::Bignum r(BN_bin2bn(raw.data(), static_cast<int>(field), nullptr));
    ossl::Bignum s(BN_bin2bn(raw.data() + field, static_cast<int>(field), nullptr));
    ossl::EcdsaSig sig(ECDSA_SIG_new());
    if (!r || !s || !sig || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot build the ECDSA signature");
    }
    (void)r.release();
    (void)s.release();
    int len = i2d_ECDSA_SIG(sig.get(), nullptr);
    if (len <= 0) {
        ossl::fail(ErrorCode::crypto, "cannot encode the ECDSA signature");
    }
    Bytes der(static_cast<std::size_t>(len));
    unsigned char* p = der.data();
    i2d_ECDSA_SIG(sig.get(), &p);
    return der;
}

// Every way an RSA decryption can fail once set up depends on the ciphertext
// (too long, too large for the modulus, bad padding): all of them give this
// one error, same code and same words, and partial output is wiped, so that a
// caller learns nothing but "it failed" (no padding oracle beyond that).
Bytes rsa_decrypt(EVP_PKEY_CTX* ctx, const Mechanism& mech, Span data) {
    std::size_t len = 0;
    Bytes out;
    if (EVP_PKEY_decrypt(ctx, nullptr, &len, data.data(), data.size()) == 1) {
        out.resize(len);
        if (EVP_PKEY_decrypt(ctx, out.data(), &len, data.data(), data.size()) == 1) {
            out.resize(len);
            return out;
        }
    }
    ossl::clear_errors();
    secure_wipe(out.data(), out.size());
    throw Error(ErrorCode::crypto, std::string(mech_name(mech.kind)) +
                                       ": decryption failed (wrong key, or not a ciphertext "
                                       "of this key)");
}

} // namespace

std::uint32_t normalise_bits(KeyType type, std::uint32_t bits) {
    switch (type) {
    case KeyType::rsa:
        if (bits == 0) {
            return kRsaDefaultBits;
        }
        if (bits < kRsaMinBits || bits > kRsaMaxBits || bits % 8 != 0) {
            throw Error(ErrorCode::usage, "RSA key size " + std::to_string(bits) +
                                              " bits is invalid (1024..4096, a multiple of 8)");
        }
        return bits;
    case KeyType::ec_p256:
    case KeyType::ec_p384:
        if (bits != 0 && bits != curve_bits(type)) {
            throw Error(ErrorCode::usage, std::string("an EC ") + curve_name(type) + " key has " +
                                              std::to_string(curve_bits(type)) + " bits, not " +
                                              std::to_string(bits));
        }
        return curve_bits(type);
    case KeyType::aes:
        if (bits == 0) {
            return kAesDefaultBits;
        }
        if (bits != 128 && bits != 192 && bits != 256) {
            throw Error(ErrorCode::usage, "AES key size " + std::to_string(bits) +
                                              " bits is invalid (128, 192 or 256)");
        }
        return bits;
    case KeyType::generic_secret:
        if (bits == 0) {
            return kGenericSecretDefaultBits;
        }
        if (bits < 8 || bits > kGenericSecretMaxBits || bits % 8 != 0) {
            throw Error(ErrorCode::usage, "generic secret key size " + std::to_string(bits) +
                                              " bits is invalid (8.." +
                                              std::to_string(kGenericSecretMaxBits) +
                                              ", a multiple of 8)");
        }
        return bits;
    case KeyType::object:
        if (bits != 0) {
            throw Error(ErrorCode::usage, "an object has no key size");
        }
        return 0;
    }
    throw Error(ErrorCode::usage, "unknown key type");
}

std::string describe(KeyType type, std::uint32_t bits) {
    switch (type) {
    case KeyType::rsa:
        return "RSA-" + std::to_string(bits);
    case KeyType::ec_p256:
        return "EC P-256";
    case KeyType::ec_p384:
        return "EC P-384";
    case KeyType::aes:
        return "AES-" + std::to_string(bits);
    case KeyType::generic_secret:
        return "generic secret of " + std::to_string(bits) + " bits";
    case KeyType::object:
        return "object";
    }
    return "unknown key";
}

Key Key::generate(KeyType type, std::uint32_t bits, const Bytes& public_exponent) {
    bits = normalise_bits(type, bits);
    if (hsm::is_object(type)) {
        throw Error(ErrorCode::usage, "an object is stored with its content, not generated");
    }
    Key key(type, bits);
    if (hsm::is_secret(type)) {
        key.secret_ = SecureBuffer(bits / 8);
        if (RAND_priv_bytes(key.secret_.data(), static_cast<int>(bits / 8)) != 1) {
            ossl::fail(ErrorCode::crypto, "cannot generate a secret key");
        }
        return key;
    }
    const bool rsa = type == KeyType::rsa;
    ossl::PkeyCtx ctx(EVP_PKEY_CTX_new_from_name(nullptr, rsa ? "RSA" : "EC", nullptr));
    if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot start key generation");
    }
    if (rsa ? EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), static_cast<int>(bits)) != 1
            : EVP_PKEY_CTX_set_group_name(ctx.get(), curve_name(type)) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot set key generation parameters");
    }
    if (rsa && !public_exponent.empty()) {
        BIGNUM* e =
            BN_bin2bn(public_exponent.data(), static_cast<int>(public_exponent.size()), nullptr);
        // set1: the context keeps its own copy.
        const bool set = e != nullptr && EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx.get(), e) == 1;
        BN_free(e);
        if (!set) {
            ossl::fail(ErrorCode::crypto, "cannot set the RSA public exponent");
        }
    }
    EVP_PKEY* raw = nullptr;
    if (EVP_PKEY_generate(ctx.get(), &raw) != 1) {
        ossl::fail(ErrorCode::crypto, "key generation failed for " + describe(type, bits));
    }
    key.pkey_.reset(raw, EVP_PKEY_free);
    return key;
}

Key Key::from_private(KeyType type, std::uint32_t bits, Span private_bytes) {
    bits = normalise_bits(type, bits);
    Key key(type, bits);
    if (hsm::is_object(type)) {
        if (private_bytes.empty() || private_bytes.size() > kMaxObjectBytes) {
            throw Error(ErrorCode::corrupt, "an object's content is 1 to " +
                                                std::to_string(kMaxObjectBytes) + " bytes");
        }
        key.secret_ = SecureBuffer(private_bytes.data(), private_bytes.size());
        return key;
    }
    if (hsm::is_secret(type)) {
        if (private_bytes.size() != bits / 8) {
            throw Error(ErrorCode::corrupt,
                        "secret key of " + std::to_string(private_bytes.size()) +
                            " bytes does not match its size of " + std::to_string(bits) + " bits");
        }
        key.secret_ = SecureBuffer(private_bytes.data(), private_bytes.size());
        return key;
    }
    ossl::Pkey decoded = decode_private_key(private_bytes, type);
    if (!decoded) {
        ossl::fail(ErrorCode::corrupt, "private key does not decode");
    }
    EVP_PKEY* raw = decoded.get();
    key.pkey_.reset(decoded.release(), EVP_PKEY_free);
    const int want = type == KeyType::rsa ? EVP_PKEY_RSA : EVP_PKEY_EC;
    if (EVP_PKEY_get_base_id(raw) != want || EVP_PKEY_get_bits(raw) != static_cast<int>(bits)) {
        throw Error(ErrorCode::corrupt,
                    "private key is not the " + describe(type, bits) + " key it claims to be");
    }
    if (type != KeyType::rsa) {
        char group[64] = {};
        size_t len = 0;
        const int nid = type == KeyType::ec_p256 ? NID_X9_62_prime256v1 : NID_secp384r1;
        if (EVP_PKEY_get_group_name(raw, group, sizeof group, &len) != 1 ||
            OBJ_txt2nid(group) != nid) {
            ossl::clear_errors();
            throw Error(ErrorCode::corrupt, "EC private key is not on the curve it claims");
        }
    }
    return key;
}

Key Key::import(KeyType type, std::uint32_t bits, const SecureBuffer& value) {
    try {
        return from_private(type, bits, std::span(value.data(), value.size()));
    } catch (const Error& e) {
        if (e.code() == ErrorCode::corrupt) {
            throw Error(ErrorCode::usage,
                        "the key material is not a " + describe(type, bits) + " key");
        }
        throw;
    }
}

SecureBuffer Key::private_bytes() const {
    if (hsm::is_secret(type_) || hsm::is_object(type_)) {
        return secret_;
    }
    ossl::Owned<PKCS8_PRIV_KEY_INFO, PKCS8_PRIV_KEY_INFO_free> p8(EVP_PKEY2PKCS8(pkey()));
    if (!p8) {
        ossl::fail(ErrorCode::crypto, "cannot encode the private key");
    }
    int len = i2d_PKCS8_PRIV_KEY_INFO(p8.get(), nullptr);
    if (len <= 0) {
        ossl::fail(ErrorCode::crypto, "cannot encode the private key");
    }
    SecureBuffer out(static_cast<std::size_t>(len));
    unsigned char* p = out.data();
    if (i2d_PKCS8_PRIV_KEY_INFO(p8.get(), &p) != len) {
        ossl::fail(ErrorCode::crypto, "cannot encode the private key");
    }
    return out;
}

Bytes Key::public_der() const {
    if (hsm::is_secret(type_)) {
        return {};
    }
    if (hsm::is_object(type_)) {
        return Bytes(secret_.data(), secret_.data() + secret_.size()); // its content
    }
    int len = i2d_PUBKEY(pkey(), nullptr);
    if (len <= 0) {
        ossl::fail(ErrorCode::crypto, "cannot encode the public key");
    }
    Bytes out(static_cast<std::size_t>(len));
    unsigned char* p = out.data();
    if (i2d_PUBKEY(pkey(), &p) != len) {
        ossl::fail(ErrorCode::crypto, "cannot encode the public key");
    }
    return out;
}

namespace {

void require(bool ok, const Mechanism& mech, KeyType type, std::uint32_t bits,
             std::string_view action) {
    if (!ok) {
        throw Error(ErrorCode::usage, std::string(mech_name(mech.kind)) + " cannot " +
                                          std::string(action) + " with an " + describe(type, bits) +
                                          " key");
    }
}

// The AES modes (symmetric.cpp).
bool is_aes_mode(MechanismKind kind) {
    switch (kind) {
    case MechanismKind::aes_gcm:
    case MechanismKind::aes_ecb:
    case MechanismKind::aes_cbc:
    case MechanismKind::aes_cbc_pad:
    case MechanismKind::aes_ctr:
    case MechanismKind::aes_key_wrap:
    case MechanismKind::aes_key_wrap_pad:
        return true;
    default:
        return false;
    }
}

} // namespace

bool Key::mac_fits(MechanismKind kind) const noexcept {
    return kind == MechanismKind::aes_cmac ? type_ == KeyType::aes
                                           : type_ == KeyType::generic_secret;
}

Bytes Key::sign(const Mechanism& mech, Span data) const {
    if (hsm::is_mac(mech.kind)) {
        require(mac_fits(mech.kind), mech, type_, bits_, "sign");
        return mac(mech, secret_, data);
    }
    const bool rsa_mech =
        mech.kind == MechanismKind::rsa_pkcs1 || mech.kind == MechanismKind::rsa_pss;
    const bool ec = type_ == KeyType::ec_p256 || type_ == KeyType::ec_p384;
    require((rsa_mech && type_ == KeyType::rsa) || (mech.kind == MechanismKind::ecdsa && ec), mech,
            type_, bits_, "sign");
    if (ec) {
        check_digest(md_of(mech.hash), data);
        return der_to_raw_ecdsa(ecdsa_sign(data), ec_field_size(bits_));
    }
    auto ctx = context_for(pkey());
    if (EVP_PKEY_sign_init(ctx.get()) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot start signing");
    }
    setup_rsa_signature(ctx.get(), mech, data);
    std::size_t len = 0;
    if (EVP_PKEY_sign(ctx.get(), nullptr, &len, data.data(), data.size()) != 1) {
        ossl::fail(ErrorCode::crypto, std::string(mech_name(mech.kind)) + " signing failed");
    }
    Bytes sig(len);
    if (EVP_PKEY_sign(ctx.get(), sig.data(), &len, data.data(), data.size()) != 1) {
        ossl::fail(ErrorCode::crypto, std::string(mech_name(mech.kind)) + " signing failed");
    }
    sig.resize(len);
    return sig;
}

void Key::verify(const Mechanism& mech, Span data, Span signature) const {
    if (hsm::is_mac(mech.kind)) {
        require(mac_fits(mech.kind), mech, type_, bits_, "verify");
        verify_mac(mech, secret_, data, signature);
        return;
    }
    const bool rsa_mech =
        mech.kind == MechanismKind::rsa_pkcs1 || mech.kind == MechanismKind::rsa_pss;
    const bool ec = type_ == KeyType::ec_p256 || type_ == KeyType::ec_p384;
    require((rsa_mech && type_ == KeyType::rsa) || (mech.kind == MechanismKind::ecdsa && ec), mech,
            type_, bits_, "verify");
    auto ctx = context_for(pkey());
    if (EVP_PKEY_verify_init(ctx.get()) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot start verification");
    }
    Bytes der;
    if (rsa_mech) {
        setup_rsa_signature(ctx.get(), mech, data);
    } else {
        check_digest(md_of(mech.hash), data);
        der = raw_to_der_ecdsa(signature, ec_field_size(bits_));
        if (der.empty()) {
            throw Error(ErrorCode::bad_signature, "ECDSA signature must be r||s of " +
                                                      std::to_string(2 * ec_field_size(bits_)) +
                                                      " bytes, got " +
                                                      std::to_string(signature.size()));
        }
        signature = der;
    }
    int rc =
        EVP_PKEY_verify(ctx.get(), signature.data(), signature.size(), data.data(), data.size());
    if (rc != 1) {
        ossl::clear_errors();
        throw Error(ErrorCode::bad_signature,
                    std::string(mech_name(mech.kind)) + " signature does not match");
    }
}

Bytes Key::encrypt(const Mechanism& mech, Span data) const {
    if (is_aes_mode(mech.kind)) {
        require(type_ == KeyType::aes, mech, type_, bits_, "encrypt");
        return aes_crypt(true, mech, secret_, data);
    }
    require(hsm::is_rsa_encryption(mech.kind) && type_ == KeyType::rsa, mech, type_, bits_,
            "encrypt");
    auto ctx = context_for(pkey());
    if (EVP_PKEY_encrypt_init(ctx.get()) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot start encryption");
    }
    setup_rsa_encryption(ctx.get(), mech);
    std::size_t len = 0;
    if (EVP_PKEY_encrypt(ctx.get(), nullptr, &len, data.data(), data.size()) != 1) {
        ossl::fail(ErrorCode::crypto, std::string(mech_name(mech.kind)) + " encryption failed");
    }
    Bytes out(len);
    if (EVP_PKEY_encrypt(ctx.get(), out.data(), &len, data.data(), data.size()) != 1) {
        ossl::fail(ErrorCode::crypto, std::string(mech_name(mech.kind)) +
                                          " encryption failed (data too long for the key?)");
    }
    out.resize(len);
    return out;
}

Bytes Key::decrypt(const Mechanism& mech, Span data) const {
    if (is_aes_mode(mech.kind)) {
        require(type_ == KeyType::aes, mech, type_, bits_, "decrypt");
        return aes_crypt(false, mech, secret_, data);
    }
    require(hsm::is_rsa_encryption(mech.kind) && type_ == KeyType::rsa, mech, type_, bits_,
            "decrypt");
    auto ctx = context_for(pkey());
    if (EVP_PKEY_decrypt_init(ctx.get()) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot start decryption");
    }
    setup_rsa_encryption(ctx.get(), mech);
    return rsa_decrypt(ctx.get(), mech, data);
}

} // namespace preloadrun::sim
