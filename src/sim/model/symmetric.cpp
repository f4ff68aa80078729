#include "model/symmetric.hpp"

#include "model/ossl.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/digest.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"

#include <climits>
#include <openssl/core_names.h>
#include <openssl/params.h>
#include <string>

namespace preloadrun::sim {

namespace {

using hsm::MechanismKind;
using Span = std::span<const std::uint8_t>;

using Cipher = ossl::Owned<EVP_CIPHER, EVP_CIPHER_free>;
using Mac = ossl::Owned<EVP_MAC, EVP_MAC_free>;
using MacCtx = ossl::Owned<EVP_MAC_CTX, EVP_MAC_CTX_free>;

const char* mode_name(MechanismKind kind) {
    switch (kind) {
    case MechanismKind::aes_ecb:
        return "ECB";
    case MechanismKind::aes_cbc:
    case MechanismKind::aes_cbc_pad:
        return "CBC";
    case MechanismKind::aes_ctr:
        return "CTR";
    case MechanismKind::aes_key_wrap:
        return "WRAP";
    case MechanismKind::aes_key_wrap_pad:
        return "WRAP-PAD";
    default:
        throw Error(ErrorCode::usage, "not an AES mode of this module");
    }
}

std::string cipher_name(std::size_t key_bytes, const char* mode) {
    if (key_bytes != 16 && key_bytes != 24 && key_bytes != 32) {
        throw Error(ErrorCode::usage, "an AES key is 16, 24 or 32 bytes");
    }
    return "AES-" + std::to_string(key_bytes * 8) + "-" + mode;
}

int to_int(std::size_t size) {
    if (size > static_cast<std::size_t>(INT_MAX) - 64) {
        throw Error(ErrorCode::usage, "data too large");
    }
    return static_cast<int>(size);
}

// What a mode cannot take, before OpenSSL sees it.
void check_length(bool encrypt, const hsm::Mechanism& mech, std::size_t size) {
    using hsm::kAesBlock;
    switch (mech.kind) {
    case MechanismKind::aes_ecb:
    case MechanismKind::aes_cbc:
        if (size % kAesBlock != 0) {
            throw Error(ErrorCode::usage, "AES-ECB and AES-CBC take whole 16-byte blocks, got " +
                                              std::to_string(size) + " bytes");
        }
        return;
    case MechanismKind::aes_cbc_pad:
        if (!encrypt && (size == 0 || size % kAesBlock != 0)) {
            throw Error(ErrorCode::usage, "an AES-CBC-PAD ciphertext is whole 16-byte blocks");
        }
        return;
    case MechanismKind::aes_key_wrap:
        // RFC 3394: at least two 64-bit blocks to wrap, three when wrapped.
        if (size % 8 != 0 || size < (encrypt ? 16U : 24U)) {
            throw Error(ErrorCode::usage,
                        std::string("AES key wrap (RFC 3394) ") + (encrypt ? "wraps" : "unwraps") +
                            " whole 8-byte blocks, at least " + (encrypt ? "16" : "24") + " bytes");
        }
        return;
    case MechanismKind::aes_key_wrap_pad:
        if (encrypt ? size == 0 : (size % 8 != 0 || size < 16)) {
            throw Error(ErrorCode::usage, encrypt ? "AES key wrap with padding needs data"
                                                  : "an RFC 5649 wrapped key is whole 8-byte "
                                                    "blocks, at least 16 bytes");
        }
        return;
    case MechanismKind::aes_ctr: {
        if (mech.counter_bits >= 64) {
            return; // 2^64 blocks: more than any request holds
        }
        // The counter is the IV's low counter_bits bits: it must not wrap
        // (OpenSSL would carry into the bits that are not the counter).
        std::uint64_t counter = 0;
        for (std::size_t i = 8; i < hsm::kAesBlock; ++i) {
            counter = (counter << 8) | mech.iv[i];
        }
        const std::uint64_t max = (std::uint64_t{1} << mech.counter_bits) - 1;
        counter &= max;
        const std::uint64_t blocks = (size + hsm::kAesBlock - 1) / hsm::kAesBlock;
        if (blocks > 0 && blocks - 1 > max - counter) {
            throw Error(ErrorCode::usage, "AES-CTR: the data would wrap the " +
                                              std::to_string(mech.counter_bits) + "-bit counter");
        }
        return;
    }
    default:
        return;
    }
}

// ---- AES-GCM ----

const EVP_CIPHER* gcm_cipher(std::size_t key_bytes) {
    switch (key_bytes) {
    case 16:
        return EVP_aes_128_gcm();
    case 24:
        return EVP_aes_192_gcm();
    default:
        return EVP_aes_256_gcm();
    }
}

// The tag size in bytes, once the IV and tag sizes are known to be accepted.
std::size_t gcm_tag_size(const hsm::Mechanism& mech) {
    const std::uint32_t bits = mech.tag_bits == 0 ? hsm::kGcmDefaultTagBits : mech.tag_bits;
    if (auto problem = hsm::gcm_parameter_problem(mech.iv.size(), bits); !problem.empty()) {
        throw Error(ErrorCode::usage, problem);
    }
    return bits / 8;
}

// After gcm_tag_size(), which checked the IV and tag sizes.
ossl::CipherCtx gcm_context(bool encrypt, const SecureBuffer& key, const hsm::Mechanism& mech) {
    ossl::CipherCtx ctx(EVP_CIPHER_CTX_new());
    if (!ctx ||
        EVP_CipherInit_ex(ctx.get(), gcm_cipher(key.size()), nullptr, nullptr, nullptr,
                          encrypt ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(mech.iv.size()),
                            nullptr) != 1 ||
        EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, key.data(), mech.iv.data(),
                          encrypt ? 1 : 0) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot set up AES-GCM");
    }
    int len = 0;
    if (!mech.aad.empty() &&
        EVP_CipherUpdate(ctx.get(), nullptr, &len, mech.aad.data(), to_int(mech.aad.size())) != 1) {
        ossl::fail(ErrorCode::crypto, "AES-GCM refuses the AAD");
    }
    return ctx;
}

Bytes gcm_encrypt(const hsm::Mechanism& mech, const SecureBuffer& key, Span data) {
    const std::size_t tag = gcm_tag_size(mech);
    auto ctx = gcm_context(true, key, mech);
    Bytes out(data.size() + tag);
    int len = 0;
    int len2 = 0;
    if (EVP_EncryptUpdate(ctx.get(), out.data(), &len, data.data(), to_int(data.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx.get(), out.data() + len, &len2) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(tag),
                            out.data() + data.size()) != 1) {
        ossl::fail(ErrorCode::crypto, "AES-GCM encryption failed");
    }
    return out;
}

Bytes gcm_decrypt(const hsm::Mechanism& mech, const SecureBuffer& key, Span data) {
    const std::size_t tag = gcm_tag_size(mech);
    if (data.size() < tag) {
        throw Error(ErrorCode::crypto, "AES-GCM data shorter than its tag");
    }
    const std::size_t body = data.size() - tag;
    auto ctx = gcm_context(false, key, mech);
    Bytes out(body);
    Bytes tag_bytes(data.begin() + static_cast<std::ptrdiff_t>(body), data.end());
    int len = 0;
    int len2 = 0;
    if (EVP_DecryptUpdate(ctx.get(), out.data(), &len, data.data(), to_int(body)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag),
                            tag_bytes.data()) != 1) {
        ossl::fail(ErrorCode::crypto, "AES-GCM decryption failed");
    }
    if (EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &len2) != 1) {
        ossl::clear_errors();
        secure_wipe(out.data(), out.size());
        throw Error(ErrorCode::crypto, "AES-GCM authentication failed (wrong key, IV, AAD or "
                                       "tag length, or the data was altered)");
    }
    return out;
}

} // namespace

Bytes aes_crypt(bool encrypt, const hsm::Mechanism& mech, const SecureBuffer& key, Span data) {
    if (mech.kind == MechanismKind::aes_gcm) {
        return encrypt ? gcm_encrypt(mech, key, data) : gcm_decrypt(mech, key, data);
    }
    check_length(encrypt, mech, data.size());
    const std::string name = cipher_name(key.size(), mode_name(mech.kind));
    Cipher cipher(EVP_CIPHER_fetch(nullptr, name.c_str(), nullptr));
    ossl::CipherCtx ctx(EVP_CIPHER_CTX_new());
    if (!cipher || !ctx) {
        ossl::fail(ErrorCode::crypto, "cannot set up " + name);
    }
    const std::uint8_t* iv = mech.iv.empty() ? nullptr : mech.iv.data();
    if (EVP_CipherInit_ex2(ctx.get(), cipher.get(), key.data(), iv, encrypt ? 1 : 0, nullptr) !=
        1) {
        ossl::fail(ErrorCode::crypto, "cannot set up " + name);
    }
    const bool pad = mech.kind == MechanismKind::aes_cbc_pad;
    if (mech.kind == MechanismKind::aes_ecb || mech.kind == MechanismKind::aes_cbc || pad) {
        EVP_CIPHER_CTX_set_padding(ctx.get(), pad ? 1 : 0);
    }
    Bytes out(data.size() + 2 * hsm::kAesBlock);
    int len = 0;
    int len2 = 0;
    if (EVP_CipherUpdate(ctx.get(), out.data(), &len, data.data(), to_int(data.size())) != 1 ||
        EVP_CipherFinal_ex(ctx.get(), out.data() + len, &len2) != 1) {
        ossl::clear_errors();
        secure_wipe(out.data(), out.size());
        if (encrypt) {
            throw Error(ErrorCode::crypto, name + " encryption failed");
        }
        // One message for every cause: no padding or integrity oracle.
        throw Error(ErrorCode::crypto, name + ": decryption failed (wrong key or IV, or not a "
                                              "ciphertext of this key)");
    }
    out.resize(static_cast<std::size_t>(len) + static_cast<std::size_t>(len2));
    return out;
}

Bytes mac(const hsm::Mechanism& mech, const SecureBuffer& key, Span data) {
    const bool cmac = mech.kind == MechanismKind::aes_cmac;
    if (!cmac && mech.kind != MechanismKind::hmac) {
        throw Error(ErrorCode::usage, "not a MAC mechanism");
    }
    Mac algorithm(EVP_MAC_fetch(nullptr, cmac ? "CMAC" : "HMAC", nullptr));
    if (!algorithm) {
        ossl::fail(ErrorCode::crypto, "cannot set up the MAC");
    }
    std::string sub;
    if (cmac) {
        sub = cipher_name(key.size(), "CBC");
    } else {
        const EVP_MD* md = hsm::evp_md(mech.hash);
        if (md == nullptr) {
            throw Error(ErrorCode::usage, "HMAC needs a hash");
        }
        sub = EVP_MD_get0_name(md);
    }
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(cmac ? OSSL_MAC_PARAM_CIPHER : OSSL_MAC_PARAM_DIGEST,
                                         sub.data(), 0),
        OSSL_PARAM_construct_end()};
    MacCtx ctx(EVP_MAC_CTX_new(algorithm.get()));
    if (!ctx || EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1 ||
        EVP_MAC_update(ctx.get(), data.data(), data.size()) != 1) {
        ossl::fail(ErrorCode::crypto, "the MAC failed");
    }
    Bytes out(EVP_MAX_MD_SIZE);
    std::size_t len = 0;
    if (EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1) {
        ossl::fail(ErrorCode::crypto, "the MAC failed");
    }
    out.resize(len);
    return out;
}

void verify_mac(const hsm::Mechanism& mech, const SecureBuffer& key, Span data, Span tag) {
    const Bytes want = mac(mech, key, data);
    if (tag.size() != want.size() || !constant_time_equal(want.data(), tag.data(), want.size())) {
        throw Error(ErrorCode::bad_signature, "the MAC does not match");
    }
}

} // namespace preloadrun::sim
