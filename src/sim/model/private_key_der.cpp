#include "model/private_key_der.hpp"

#include <memory>
#include <mutex>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <vector>

namespace preloadrun::sim {

namespace {

// A decoder context for one key type, with the slot it writes its key to.
struct Decoder {
    EVP_PKEY* out = nullptr;
    OSSL_DECODER_CTX* ctx = nullptr;

    Decoder() = default;
    Decoder(const Decoder&) = delete;
    Decoder& operator=(const Decoder&) = delete;
    ~Decoder() {
        OSSL_DECODER_CTX_free(ctx);
        EVP_PKEY_free(out);
    }
};

// The idle decoders of one key type. Never destroyed: a connection thread
// may still decode while the process exits.
class DecoderPool {
public:
    explicit DecoderPool(const char* keytype) : keytype_(keytype) {}

    // An idle decoder, or a new one; null when OpenSSL has none for the type.
    std::unique_ptr<Decoder> take() {
        {
            std::lock_guard<std::mutex> hold(lock_);
            if (!idle_.empty()) {
                auto decoder = std::move(idle_.back());
                idle_.pop_back();
                return decoder;
            }
        }
        auto decoder = std::make_unique<Decoder>();
        decoder->ctx = OSSL_DECODER_CTX_new_for_pkey(&decoder->out, "DER", "PrivateKeyInfo",
                                                     keytype_, EVP_PKEY_KEYPAIR, nullptr, nullptr);
        if (decoder->ctx == nullptr || OSSL_DECODER_CTX_get_num_decoders(decoder->ctx) == 0) {
            ERR_clear_error();
            return nullptr;
        }
        return decoder;
    }

    // Back to the pool after a decode that worked (at most kKept are kept:
    // as many as threads decode at once, usually one or two).
    void give(std::unique_ptr<Decoder> decoder) {
        std::lock_guard<std::mutex> hold(lock_);
        if (idle_.size() < kKept) {
            idle_.push_back(std::move(decoder));
        }
    }

private:
    static constexpr std::size_t kKept = 8;
    const char* keytype_;
    std::mutex lock_;
    std::vector<std::unique_ptr<Decoder>> idle_;
};

DecoderPool& pool_for(hsm::KeyType type) {
    static auto* const rsa = new DecoderPool("RSA");
    static auto* const ec = new DecoderPool("EC");
    return type == hsm::KeyType::rsa ? *rsa : *ec;
}

} // namespace

ossl::Pkey decode_private_key(std::span<const std::uint8_t> der, hsm::KeyType type) {
    auto& pool = pool_for(type);
    if (auto decoder = pool.take()) {
        const unsigned char* p = der.data();
        std::size_t left = der.size();
        if (OSSL_DECODER_from_data(decoder->ctx, &p, &left) == 1 && decoder->out != nullptr) {
            ossl::Pkey key(decoder->out);
            decoder->out = nullptr;
            pool.give(std::move(decoder));
            return key;
        }
        // Not a PrivateKeyInfo of that type: the decoder is dropped (a
        // failed run is not trusted to leave it as it was).
        ERR_clear_error();
    }
    const unsigned char* p = der.data();
    return ossl::Pkey(
        d2i_AutoPrivateKey_ex(nullptr, &p, static_cast<long>(der.size()), nullptr, nullptr));
}

} // namespace preloadrun::sim
