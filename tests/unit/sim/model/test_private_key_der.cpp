#include "model/crypto.hpp"
#include "model/private_key_der.hpp"

#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <thread>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::sim;
using hsm::KeyType;

namespace {

// The public half of a key, as DER (empty if it has none): two keys are the
// same when these match. No assertion: threads call it.
Bytes public_der(EVP_PKEY* key) {
    const int len = i2d_PUBKEY(key, nullptr);
    if (len <= 0) {
        return {};
    }
    Bytes der(static_cast<std::size_t>(len));
    unsigned char* p = der.data();
    return i2d_PUBKEY(key, &p) == len ? der : Bytes{};
}

Bytes bytes_of(const SecureBuffer& buffer) {
    return Bytes(buffer.data(), buffer.data() + buffer.size());
}

// The key as OpenSSL's own d2i_AutoPrivateKey reads it: what to compare with.
preloadrun::ossl::Pkey reference(const Key& key) {
    const SecureBuffer der = key.private_bytes();
    const unsigned char* p = der.data();
    return preloadrun::ossl::Pkey(
        d2i_AutoPrivateKey_ex(nullptr, &p, static_cast<long>(der.size()), nullptr, nullptr));
}

// Traditional form (ECPrivateKey, RSAPrivateKey): not PrivateKeyInfo.
Bytes traditional_der(EVP_PKEY* key) {
    const int len = i2d_PrivateKey(key, nullptr);
    REQUIRE(len > 0);
    Bytes der(static_cast<std::size_t>(len));
    unsigned char* p = der.data();
    REQUIRE(i2d_PrivateKey(key, &p) == len);
    return der;
}

} // namespace

TEST_CASE("sim::decode_private_key gives back the key of its PKCS#8 form, again and again") {
    const Key ec256 = Key::generate(KeyType::ec_p256, 256);
    const Key ec384 = Key::generate(KeyType::ec_p384, 384);
    const Key rsa = Key::generate(KeyType::rsa, 2048);
    // Interleaved, more times than a pool keeps decoders: a kept decoder
    // must give each key, never the one it decoded before.
    for (int round = 0; round < 12; ++round) {
        for (const Key* key : {&ec256, &ec384, &rsa}) {
            const Bytes der = bytes_of(key->private_bytes());
            const auto decoded = decode_private_key(der, key->type());
            REQUIRE(decoded);
            CHECK(public_der(decoded.get()) == key->public_der());
        }
    }
}

TEST_CASE("sim::decode_private_key takes what d2i_AutoPrivateKey takes: the wrong type hint, "
          "the traditional form") {
    const Key ec = Key::generate(KeyType::ec_p256, 256);
    const Key rsa = Key::generate(KeyType::rsa, 2048);
    // An EC key whose record says RSA decodes (the caller checks the type).
    const auto ec_as_rsa = decode_private_key(bytes_of(ec.private_bytes()), KeyType::rsa);
    REQUIRE(ec_as_rsa);
    CHECK(EVP_PKEY_get_base_id(ec_as_rsa.get()) == EVP_PKEY_EC);
    const auto rsa_as_ec = decode_private_key(bytes_of(rsa.private_bytes()), KeyType::ec_p256);
    REQUIRE(rsa_as_ec);
    CHECK(EVP_PKEY_get_base_id(rsa_as_ec.get()) == EVP_PKEY_RSA);
    for (const Key* key : {&ec, &rsa}) {
        const auto decoded =
            decode_private_key(traditional_der(reference(*key).get()), key->type());
        REQUIRE(decoded);
        CHECK(public_der(decoded.get()) == key->public_der());
    }
}

TEST_CASE("sim::decode_private_key: what is not a private key gives none, and the next one "
          "still decodes") {
    const Key ec = Key::generate(KeyType::ec_p256, 256);
    const Bytes good = bytes_of(ec.private_bytes());
    Bytes truncated(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(good.size() / 2));
    Bytes flipped = good;
    flipped[flipped.size() / 2] ^= 0xff;
    const Bytes public_only = ec.public_der();
    for (const Bytes& bad : {Bytes{}, Bytes{0x30, 0x00}, truncated, public_only}) {
        CHECK_FALSE(decode_private_key(bad, KeyType::ec_p256));
        const auto decoded = decode_private_key(good, KeyType::ec_p256);
        REQUIRE(decoded);
        CHECK(public_der(decoded.get()) == ec.public_der());
    }
    // A flipped byte inside the key may still parse as some key: never as this one.
    if (const auto other = decode_private_key(flipped, KeyType::ec_p256)) {
        CHECK(public_der(other.get()) != ec.public_der());
    }
}

TEST_CASE("sim::decode_private_key from many threads at once (connection threads)") {
    std::vector<Key> keys;
    for (int i = 0; i < 4; ++i) {
        keys.push_back(Key::generate(i % 2 == 0 ? KeyType::ec_p256 : KeyType::ec_p384,
                                     i % 2 == 0 ? 256 : 384));
    }
    std::vector<int> wrong(8, 0);
    std::vector<std::thread> threads;
    for (std::size_t t = 0; t < wrong.size(); ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 50; ++i) {
                const Key& key = keys[(t + static_cast<std::size_t>(i)) % keys.size()];
                const auto decoded = decode_private_key(bytes_of(key.private_bytes()), key.type());
                if (!decoded || public_der(decoded.get()) != key.public_der()) {
                    ++wrong[t];
                }
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    for (const int n : wrong) {
        CHECK(n == 0);
    }
}
