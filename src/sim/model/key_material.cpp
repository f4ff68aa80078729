// Key material brought from outside the HSM (an unwrapped key, a public key
// on its own), and the check value of a secret key: the parts of Key
// (crypto.hpp) that C_UnwrapKey, public key objects and CKA_CHECK_VALUE need;
// and the signing context an EC key keeps.

#include "model/crypto.hpp"
#include "model/ossl.hpp"
#include "model/private_key_der.hpp"
#include "model/symmetric.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"

#include <array>
#include <mutex>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

namespace preloadrun::sim {

using hsm::KeyType;

namespace {

// The type of an RSA or EC P-256/P-384 key; Error(usage), naming `what`,
// for another.
KeyType type_of(EVP_PKEY* pkey, const std::string& what) {
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_RSA) {
        return KeyType::rsa;
    }
    if (EVP_PKEY_get_base_id(pkey) == EVP_PKEY_EC) {
        char group[64] = {};
        size_t len = 0;
        EVP_PKEY_get_group_name(pkey, group, sizeof group, &len);
        const int nid = OBJ_txt2nid(group);
        if (nid == NID_X9_62_prime256v1 || nid == NID_secp384r1) {
            return nid == NID_X9_62_prime256v1 ? KeyType::ec_p256 : KeyType::ec_p384;
        }
        ossl::clear_errors();
        throw Error(ErrorCode::usage, what + " is an EC key on a curve other than P-256 and P-384");
    }
    throw Error(ErrorCode::usage, what + " is neither an RSA nor an EC key");
}

} // namespace

Key Key::from_public(std::span<const std::uint8_t> der) {
    const unsigned char* p = der.data();
    EVP_PKEY* raw = d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size()));
    if (raw == nullptr || p != der.data() + der.size()) {
        EVP_PKEY_free(raw);
        ossl::clear_errors();
        throw Error(ErrorCode::usage, "the public key is not SubjectPublicKeyInfo DER");
    }
    std::shared_ptr<EVP_PKEY> pkey(raw, EVP_PKEY_free);
    const KeyType type = type_of(raw, "the public key");
    const auto bits = static_cast<std::uint32_t>(EVP_PKEY_get_bits(raw));
    if (type == KeyType::rsa && (bits < kRsaMinBits || bits > kRsaMaxBits)) {
        throw Error(ErrorCode::usage, "RSA public keys are 1024 to 4096 bits");
    }
    Key key(type, bits);
    key.pkey_ = std::move(pkey);
    return key;
}

Key Key::import_unwrapped(KeyType type, std::uint32_t bits, const SecureBuffer& value) {
    if (hsm::is_secret(type)) {
        return import(type, bits != 0 ? bits : static_cast<std::uint32_t>(value.size() * 8), value);
    }
    if (hsm::is_object(type)) {
        throw Error(ErrorCode::usage, "an object is not a key to unwrap");
    }
    const ossl::Pkey pkey = decode_private_key(std::span(value.data(), value.size()), type);
    if (!pkey) {
        ossl::clear_errors();
        throw Error(ErrorCode::usage, "the unwrapped data is not a private key");
    }
    const KeyType own = type_of(pkey.get(), "the unwrapped key");
    if ((own == KeyType::rsa) != (type == KeyType::rsa)) {
        throw Error(ErrorCode::usage, "the unwrapped key is not an " +
                                          std::string(type == KeyType::rsa ? "RSA" : "EC") +
                                          " key");
    }
    return import(own, bits != 0 ? bits : static_cast<std::uint32_t>(EVP_PKEY_get_bits(pkey.get())),
                  value);
}

Bytes Key::check_value() const {
    Bytes out;
    if (type_ == KeyType::aes) {
        hsm::Mechanism ecb;
        ecb.kind = hsm::MechanismKind::aes_ecb;
        out = aes_crypt(true, ecb, secret_, Bytes(hsm::kAesBlock, 0));
    } else if (type_ == KeyType::generic_secret) {
        unsigned char sha1[SHA_DIGEST_LENGTH];
        SHA1(secret_.data(), secret_.size(), sha1);
        out.assign(sha1, sha1 + sizeof sha1);
    }
    if (out.size() > 3) {
        out.resize(3);
    }
    return out;
}

// A few contexts, each used by one signature at a time: a key shared by
// several modules (World::unwrap_key) signs for several threads at once.
struct Key::SignContext {
    struct Slot {
        std::mutex mutex;
        ossl::PkeyCtx ctx; // made at the first signature that uses the slot
    };
    std::array<Slot, 4> slots;
};

Key::Key(hsm::KeyType type, std::uint32_t bits)
    : type_(type), bits_(bits), ec_sign_(std::make_shared<SignContext>()) {}

Bytes Key::ecdsa_sign(std::span<const std::uint8_t> digest) const {
    auto begin = [this] {
        ossl::PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, pkey(), nullptr));
        if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1) {
            ossl::fail(ErrorCode::crypto, "cannot start signing");
        }
        return ctx;
    };
    std::unique_lock<std::mutex> lock;
    ossl::PkeyCtx own;
    EVP_PKEY_CTX* ctx = nullptr;
    for (auto& slot : ec_sign_->slots) {
        lock = std::unique_lock(slot.mutex, std::try_to_lock);
        if (lock.owns_lock()) {
            if (!slot.ctx) {
                slot.ctx = begin();
            }
            ctx = slot.ctx.get();
            break;
        }
    }
    if (ctx == nullptr) {
        own = begin();
        ctx = own.get();
    }
    auto len = static_cast<std::size_t>(EVP_PKEY_get_size(pkey()));
    Bytes sig(len);
    if (EVP_PKEY_sign(ctx, sig.data(), &len, digest.data(), digest.size()) != 1) {
        ossl::fail(ErrorCode::crypto, "ECDSA signing failed");
    }
    sig.resize(len);
    return sig;
}

} // namespace preloadrun::sim
