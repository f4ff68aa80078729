#include "model/keywrap.hpp"

#include "model/ossl.hpp"

#include <climits>
#include <openssl/rand.h>
#include <string>

namespace preloadrun::sim {

namespace {

const std::uint8_t* bytes_of(std::string_view s) {
    return reinterpret_cast<const std::uint8_t*>(s.data());
}

void check_kek(const SecureBuffer& kek) {
    if (kek.size() != kWrapKeySize) {
        throw Error(ErrorCode::internal,
                    "wrapping key must be 32 bytes, got " + std::to_string(kek.size()));
    }
}

} // namespace

Bytes random_bytes(std::size_t size) {
    Bytes out(size);
    if (size > 0 && RAND_bytes(out.data(), static_cast<int>(size)) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot generate random bytes");
    }
    return out;
}

SecureBuffer random_secret(std::size_t size) {
    SecureBuffer out(size);
    if (size > 0 && RAND_priv_bytes(out.data(), static_cast<int>(size)) != 1) {
        ossl::fail(ErrorCode::crypto, "cannot generate random bytes");
    }
    return out;
}

Bytes sha256(std::span<const std::uint8_t> data) {
    Bytes out(32);
    unsigned int len = 0;
    if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1) {
        ossl::fail(ErrorCode::crypto, "SHA-256 failed");
    }
    return out;
}

SecureBuffer derive_key(const SecureBuffer& passphrase, std::span<const std::uint8_t> salt,
                        std::uint32_t iterations) {
    if (iterations == 0 || iterations > static_cast<std::uint32_t>(INT_MAX)) {
        throw Error(ErrorCode::internal, "invalid KDF iteration count");
    }
    SecureBuffer key(kWrapKeySize);
    if (PKCS5_PBKDF2_HMAC(reinterpret_cast<const char*>(passphrase.data()),
                          static_cast<int>(passphrase.size()), salt.data(),
                          static_cast<int>(salt.size()), static_cast<int>(iterations), EVP_sha256(),
                          static_cast<int>(key.size()), key.data()) != 1) {
        ossl::fail(ErrorCode::crypto, "PBKDF2 failed");
    }
    return key;
}

Bytes wrap(const SecureBuffer& kek, std::span<const std::uint8_t> plaintext, std::string_view aad) {
    check_kek(kek);
    Bytes out = random_bytes(kWrapIvSize);
    out.resize(kWrapIvSize + plaintext.size() + kWrapTagSize);
    ossl::CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    int len2 = 0;
    if (!ctx ||
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, kek.data(), out.data()) != 1 ||
        EVP_EncryptUpdate(ctx.get(), nullptr, &len, bytes_of(aad), static_cast<int>(aad.size())) !=
            1 ||
        EVP_EncryptUpdate(ctx.get(), out.data() + kWrapIvSize, &len, plaintext.data(),
                          static_cast<int>(plaintext.size())) != 1 ||
        EVP_EncryptFinal_ex(ctx.get(), out.data() + kWrapIvSize + len, &len2) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(kWrapTagSize),
                            out.data() + kWrapIvSize + plaintext.size()) != 1) {
        ossl::fail(ErrorCode::crypto, "key wrapping failed");
    }
    return out;
}

SecureBuffer unwrap(const SecureBuffer& kek, std::span<const std::uint8_t> blob,
                    std::string_view aad) {
    check_kek(kek);
    if (blob.size() < kWrapIvSize + kWrapTagSize) {
        throw Error(ErrorCode::crypto, "wrapped blob too short");
    }
    const std::size_t body = blob.size() - kWrapIvSize - kWrapTagSize;
    SecureBuffer out(body);
    Bytes tag(blob.end() - static_cast<std::ptrdiff_t>(kWrapTagSize), blob.end());
    ossl::CipherCtx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    int len2 = 0;
    if (!ctx ||
        EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, kek.data(), blob.data()) != 1 ||
        EVP_DecryptUpdate(ctx.get(), nullptr, &len, bytes_of(aad), static_cast<int>(aad.size())) !=
            1 ||
        EVP_DecryptUpdate(ctx.get(), out.data(), &len, blob.data() + kWrapIvSize,
                          static_cast<int>(body)) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(kWrapTagSize),
                            tag.data()) != 1) {
        ossl::fail(ErrorCode::crypto, "key unwrapping failed");
    }
    if (EVP_DecryptFinal_ex(ctx.get(), out.data() + len, &len2) != 1) {
        ossl::clear_errors();
        throw Error(ErrorCode::crypto, "wrapped blob does not authenticate");
    }
    return out;
}

} // namespace preloadrun::sim
