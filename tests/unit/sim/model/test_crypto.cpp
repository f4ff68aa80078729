#include "model/crypto.hpp"
#include "preloadrun/common/error.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <openssl/evp.h>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::sim;
using hsm::Hash;
using hsm::KeyType;
using hsm::Mechanism;
using hsm::MechanismKind;

namespace {

const Key& rsa2048() {
    static const Key key = Key::generate(KeyType::rsa, 2048);
    return key;
}

Mechanism mech(MechanismKind kind, Hash hash = Hash::none) {
    Mechanism m;
    m.kind = kind;
    m.hash = hash;
    return m;
}

using testsupport::code_of;

} // namespace

TEST_CASE("sim::normalise_bits") {
    CHECK(normalise_bits(KeyType::rsa, 0) == 2048);
    CHECK(normalise_bits(KeyType::rsa, 3072) == 3072);
    CHECK(normalise_bits(KeyType::ec_p256, 0) == 256);
    CHECK(normalise_bits(KeyType::ec_p384, 384) == 384);
    CHECK(normalise_bits(KeyType::aes, 0) == 256);
    CHECK(normalise_bits(KeyType::aes, 192) == 192);
    for (auto [type, bits] : {std::pair{KeyType::rsa, 512u},
                              {KeyType::rsa, 8192u},
                              {KeyType::rsa, 2047u},
                              {KeyType::ec_p256, 384u},
                              {KeyType::aes, 512u},
                              {KeyType::aes, 64u}}) {
        CHECK(code_of([&] { normalise_bits(type, bits); }) == ErrorCode::usage);
    }
}

TEST_CASE("sim::Key RSA PKCS#1 v1.5 signatures") {
    const Key& key = rsa2048();
    REQUIRE(key.bits() == 2048);
    const Bytes digest = simtest::digest(Hash::sha256, to_bytes("hello"));
    Bytes sig = key.sign(mech(MechanismKind::rsa_pkcs1, Hash::sha256), digest);
    CHECK(sig.size() == 256);
    CHECK(simtest::openssl_verify_pkcs1(key.public_der(), digest, sig));
    CHECK_NOTHROW(key.verify(mech(MechanismKind::rsa_pkcs1, Hash::sha256), digest, sig));

    SUBCASE("HASH_NONE pads the given DigestInfo: the same signature") {
        Bytes raw = key.sign(mech(MechanismKind::rsa_pkcs1), simtest::sha256_digest_info(digest));
        CHECK(raw == sig);
        CHECK_NOTHROW(
            key.verify(mech(MechanismKind::rsa_pkcs1), simtest::sha256_digest_info(digest), raw));
    }
    SUBCASE("a changed signature or digest does not verify") {
        Bytes bad = sig;
        bad[10] ^= 1;
        CHECK(code_of([&] {
                  key.verify(mech(MechanismKind::rsa_pkcs1, Hash::sha256), digest, bad);
              }) == ErrorCode::bad_signature);
        Bytes other = simtest::digest(Hash::sha256, to_bytes("hellO"));
        CHECK(code_of([&] {
                  key.verify(mech(MechanismKind::rsa_pkcs1, Hash::sha256), other, sig);
              }) == ErrorCode::bad_signature);
    }
    SUBCASE("a digest of the wrong length is a bad request") {
        CHECK(code_of([&] { key.sign(mech(MechanismKind::rsa_pkcs1, Hash::sha384), digest); }) ==
              ErrorCode::usage);
    }
}

TEST_CASE("sim::Key RSA-PSS signatures") {
    const Key& key = rsa2048();
    const Bytes digest = simtest::digest(Hash::sha256, to_bytes("pss"));
    Mechanism m = mech(MechanismKind::rsa_pss, Hash::sha256);
    m.mgf_hash = Hash::sha256;
    m.salt_len = 32;
    Bytes sig = key.sign(m, digest);
    CHECK(simtest::openssl_verify_pss(key.public_der(), digest, sig, 32));
    CHECK_NOTHROW(key.verify(m, digest, sig));
    CHECK(key.sign(m, digest) != sig); // randomised salt
    m.salt_len = 20;
    CHECK(code_of([&] { key.verify(m, digest, sig); }) == ErrorCode::bad_signature);
    SUBCASE("PSS needs a hash") {
        CHECK(code_of([&] { key.sign(mech(MechanismKind::rsa_pss), digest); }) == ErrorCode::usage);
    }
}

TEST_CASE("sim::Key ECDSA signatures are r||s of fixed width") {
    for (auto [type, width, hash] :
         {std::tuple{KeyType::ec_p256, 64u, Hash::sha256}, {KeyType::ec_p384, 96u, Hash::sha384}}) {
        CAPTURE(width);
        Key key = Key::generate(type, 0);
        const Bytes digest = simtest::digest(hash, to_bytes("ecdsa"));
        for (int i = 0; i < 8; ++i) { // r or s with leading zeros still pad to the width
            Bytes sig = key.sign(mech(MechanismKind::ecdsa), digest);
            REQUIRE(sig.size() == width);
            CHECK(simtest::openssl_verify_ecdsa_raw(key.public_der(), digest, sig));
            CHECK_NOTHROW(key.verify(mech(MechanismKind::ecdsa), digest, sig));
        }
        Bytes sig = key.sign(mech(MechanismKind::ecdsa, hash), digest);
        sig[5] ^= 0x80;
        CHECK(code_of([&] { key.verify(mech(MechanismKind::ecdsa), digest, sig); }) ==
              ErrorCode::bad_signature);
        CHECK(code_of([&] {
                  key.verify(mech(MechanismKind::ecdsa), digest, Bytes(sig.begin(), sig.end() - 1));
              }) == ErrorCode::bad_signature);
    }
}

TEST_CASE("sim::Key one ECDSA key signs for many threads at once (modules share a key)") {
    const Key key = Key::generate(KeyType::ec_p256, 0);
    const Bytes digest = simtest::digest(Hash::sha256, to_bytes("shared"));
    // More threads than the key keeps signing contexts: the others make their own.
    constexpr int kThreads = 8;
    constexpr int kEach = 50;
    std::vector<std::vector<Bytes>> signatures(kThreads);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < kEach; ++i) {
                signatures[t].push_back(key.sign(mech(MechanismKind::ecdsa), digest));
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    for (const auto& mine : signatures) {
        REQUIRE(mine.size() == kEach);
        for (const auto& sig : mine) {
            CHECK(simtest::openssl_verify_ecdsa_raw(key.public_der(), digest, sig));
        }
    }
}

TEST_CASE("sim::Key mechanism and key type must match") {
    Key ec = Key::generate(KeyType::ec_p256, 0);
    Key aes = Key::generate(KeyType::aes, 128);
    Bytes d = simtest::digest(Hash::sha256, to_bytes("x"));
    CHECK(code_of([&] { ec.sign(mech(MechanismKind::rsa_pkcs1, Hash::sha256), d); }) ==
          ErrorCode::usage);
    CHECK(code_of([&] { rsa2048().sign(mech(MechanismKind::ecdsa), d); }) == ErrorCode::usage);
    CHECK(code_of([&] { aes.sign(mech(MechanismKind::ecdsa), d); }) == ErrorCode::usage);
    CHECK(code_of([&] { ec.encrypt(mech(MechanismKind::rsa_oaep), d); }) == ErrorCode::usage);
    CHECK(code_of([&] { rsa2048().encrypt(mech(MechanismKind::aes_gcm), d); }) == ErrorCode::usage);
}

TEST_CASE("sim::Key RSA encryption") {
    const Key& key = rsa2048();
    const Bytes secret = to_bytes("a secret message");
    SUBCASE("OAEP round trip, and decryption of OpenSSL's own ciphertext") {
        Mechanism m = mech(MechanismKind::rsa_oaep, Hash::sha256);
        m.mgf_hash = Hash::sha256;
        m.label = to_bytes("label");
        Bytes ct = key.encrypt(m, secret);
        CHECK(ct.size() == 256);
        CHECK(key.decrypt(m, ct) == secret);
        CHECK(key.decrypt(m, simtest::openssl_encrypt_oaep(key.public_der(), secret, m.label)) ==
              secret);
        m.label = to_bytes("other");
        CHECK(code_of([&] { key.decrypt(m, ct); }) == ErrorCode::crypto);
    }
    SUBCASE("OAEP with default (SHA-1) parameters") {
        Mechanism m = mech(MechanismKind::rsa_oaep);
        CHECK(key.decrypt(m, key.encrypt(m, secret)) == secret);
    }
    SUBCASE("PKCS#1 v1.5 round trip") {
        Mechanism m = mech(MechanismKind::rsa_pkcs1_enc);
        CHECK(key.decrypt(m, key.encrypt(m, secret)) == secret);
    }
    SUBCASE("PKCS#1 v1.5: every bad ciphertext fails alike (no padding oracle)") {
        const Mechanism m = mech(MechanismKind::rsa_pkcs1_enc);
        const Bytes spki = key.public_der();
        // Encoded blocks (EM, 256 bytes): 00 02 PS(>= 8 non-zero) 00 M when well formed.
        auto block = [](std::uint8_t first, std::uint8_t type, std::size_t ps, bool separator) {
            Bytes em(256, 0x42);
            em[0] = first;
            em[1] = type;
            if (separator) {
                em[2 + ps] = 0x00;
            }
            return em;
        };
        REQUIRE(key.decrypt(m, simtest::openssl_rsa_raw(spki, block(0, 2, 20, true))) ==
                Bytes(256 - 23, 0x42));
        std::vector<Bytes> bad = {
            simtest::openssl_rsa_raw(spki, block(0, 1, 20, true)), // block type 1
            simtest::openssl_rsa_raw(spki, block(0, 2, 0, false)), // no separator
            simtest::openssl_rsa_raw(spki, block(0, 2, 5, true)),  // padding too short
            simtest::openssl_rsa_raw(spki, block(1, 2, 20, true)), // first byte not zero
            Bytes(256, 0xff),                                      // above the modulus
            Bytes(255, 0x01),                                      // one byte short
            Bytes(257, 0x01),                                      // one byte long
        };
        std::set<std::pair<ErrorCode, std::string>> outcomes;
        for (const auto& ct : bad) {
            try {
                key.decrypt(m, ct);
                FAIL("a bad ciphertext decrypted");
            } catch (const Error& e) {
                outcomes.emplace(e.code(), e.what());
            }
        }
        REQUIRE(outcomes.size() == 1);
        CHECK(outcomes.begin()->first == ErrorCode::crypto);
        CHECK(outcomes.begin()->second ==
              "RSA PKCS#1 v1.5 encryption: decryption failed (wrong key, or not a ciphertext of "
              "this key)");
    }
    SUBCASE("too much data for the key") {
        CHECK(code_of([&] { key.encrypt(mech(MechanismKind::rsa_pkcs1_enc), Bytes(300, 1)); }) ==
              ErrorCode::crypto);
    }
}

TEST_CASE("sim::Key AES-GCM") {
    for (std::uint32_t bits : {128u, 192u, 256u}) {
        CAPTURE(bits);
        Key key = Key::generate(KeyType::aes, bits);
        Mechanism m = mech(MechanismKind::aes_gcm);
        m.iv = Bytes(12, 7);
        m.aad = to_bytes("header");
        m.tag_bits = 128;
        const Bytes plain = to_bytes("attack at dawn");
        Bytes ct = key.encrypt(m, plain);
        REQUIRE(ct.size() == plain.size() + 16);
        CHECK(key.decrypt(m, ct) == plain);

        // Independent check: OpenSSL decrypts ciphertext||tag with the raw key.
        auto raw = key.private_bytes();
        REQUIRE(raw.size() == bits / 8);
        const EVP_CIPHER* cipher = bits == 128   ? EVP_aes_128_gcm()
                                   : bits == 192 ? EVP_aes_192_gcm()
                                                 : EVP_aes_256_gcm();
        EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
        Bytes out(plain.size());
        int len = 0;
        EVP_DecryptInit_ex(ctx, cipher, nullptr, raw.data(), m.iv.data());
        EVP_DecryptUpdate(ctx, nullptr, &len, m.aad.data(), static_cast<int>(m.aad.size()));
        EVP_DecryptUpdate(ctx, out.data(), &len, ct.data(), static_cast<int>(plain.size()));
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, ct.data() + plain.size());
        CHECK(EVP_DecryptFinal_ex(ctx, out.data() + len, &len) == 1);
        EVP_CIPHER_CTX_free(ctx);
        CHECK(out == plain);

        Bytes bad = ct;
        bad[0] ^= 1;
        CHECK(code_of([&] { key.decrypt(m, bad); }) == ErrorCode::crypto);
        Mechanism other_aad = m;
        other_aad.aad = to_bytes("Header");
        CHECK(code_of([&] { key.decrypt(other_aad, ct); }) == ErrorCode::crypto);
    }
    SUBCASE("short tags and bad parameters") {
        Key key = Key::generate(KeyType::aes, 256);
        Mechanism m = mech(MechanismKind::aes_gcm);
        m.iv = Bytes(12, 1);
        m.tag_bits = 96;
        Bytes ct = key.encrypt(m, to_bytes("x"));
        CHECK(ct.size() == 1 + 12);
        CHECK(key.decrypt(m, ct) == to_bytes("x"));
        for (std::uint32_t unsafe : {32u, 64u, 100u}) {
            m.tag_bits = unsafe;
            CHECK(code_of([&] { key.encrypt(m, to_bytes("x")); }) == ErrorCode::usage);
            CHECK(code_of([&] { key.decrypt(m, ct); }) == ErrorCode::usage);
        }
        m.tag_bits = 128;
        for (std::size_t unsafe :
             {std::size_t{0}, std::size_t{8}, std::size_t{11}, std::size_t{129}}) {
            m.iv = Bytes(unsafe, 1);
            CHECK(code_of([&] { key.encrypt(m, to_bytes("x")); }) == ErrorCode::usage);
        }
        m.iv = Bytes(128, 1); // the longest IV accepted
        CHECK(key.decrypt(m, key.encrypt(m, to_bytes("x"))) == to_bytes("x"));
    }
}

TEST_CASE("sim::Key private and public serialisation") {
    SUBCASE("RSA and EC keys survive PKCS#8") {
        for (auto type : {KeyType::ec_p256, KeyType::ec_p384}) {
            Key key = Key::generate(type, 0);
            auto der = key.private_bytes();
            REQUIRE(der.size() > 0);
            CHECK(der.data()[0] == 0x30); // a DER SEQUENCE
            Key back = Key::from_private(type, 0, der.span());
            CHECK(back.public_der() == key.public_der());
            Bytes d = simtest::digest(Hash::sha256, to_bytes("x"));
            CHECK(simtest::openssl_verify_ecdsa_raw(key.public_der(), d,
                                                    back.sign(mech(MechanismKind::ecdsa), d)));
        }
        Key back = Key::from_private(KeyType::rsa, 2048, rsa2048().private_bytes().span());
        CHECK(back.public_der() == rsa2048().public_der());
    }
    SUBCASE("AES keys have no public part") {
        Key key = Key::generate(KeyType::aes, 256);
        CHECK(key.public_der().empty());
        CHECK(Key::from_private(KeyType::aes, 256, key.private_bytes().span())
                  .private_bytes()
                  .size() == 32);
    }
    SUBCASE("bytes of another type or size are corrupt") {
        auto ec = Key::generate(KeyType::ec_p256, 0).private_bytes();
        CHECK(code_of([&] { Key::from_private(KeyType::rsa, 2048, ec.span()); }) ==
              ErrorCode::corrupt);
        CHECK(code_of([&] { Key::from_private(KeyType::ec_p384, 0, ec.span()); }) ==
              ErrorCode::corrupt);
        CHECK(code_of([&] {
                  Key::from_private(KeyType::rsa, 3072, rsa2048().private_bytes().span());
              }) == ErrorCode::corrupt);
        CHECK(code_of([&] { Key::from_private(KeyType::rsa, 2048, to_bytes("garbage")); }) ==
              ErrorCode::corrupt);
        CHECK(code_of([&] { Key::from_private(KeyType::aes, 128, Bytes(32, 0)); }) ==
              ErrorCode::corrupt);
    }
}

namespace {
SecureBuffer secure(const Bytes& b) {
    return SecureBuffer(b.data(), b.size());
}
} // namespace

TEST_CASE("sim::Key check values: AES of a zero block, SHA-1 of a generic secret") {
    const auto aes = Key::import(hsm::KeyType::aes, 128, secure(Bytes(16, 0)));
    CHECK(aes.check_value() == Bytes{0x66, 0xe9, 0x4b}); // FIPS-197's AES-128(0, 0)
    Bytes mac(20);
    for (std::size_t i = 0; i < mac.size(); ++i) {
        mac[i] = static_cast<std::uint8_t>(i + 1);
    }
    const auto generic = Key::import(hsm::KeyType::generic_secret, 160, secure(mac));
    CHECK(generic.check_value() == Bytes{0x05, 0x67, 0x0b});
    CHECK(Key::generate(hsm::KeyType::ec_p256, 0).check_value().empty());
}

TEST_CASE("sim::Key::import_unwrapped takes the key's own size and curve") {
    const auto ec = Key::generate(hsm::KeyType::ec_p384, 0);
    const auto back = Key::import_unwrapped(hsm::KeyType::ec_p256, 0, ec.private_bytes());
    CHECK(back.type() == hsm::KeyType::ec_p384);
    CHECK(back.public_der() == ec.public_der());
    CHECK(code_of([&] { (void)Key::import_unwrapped(hsm::KeyType::rsa, 0, ec.private_bytes()); }) ==
          ErrorCode::usage);
    const auto secret = Key::import_unwrapped(hsm::KeyType::aes, 0, secure(Bytes(24, 7)));
    CHECK(secret.bits() == 192);
    CHECK(code_of([&] {
              (void)Key::import_unwrapped(hsm::KeyType::aes, 0, secure(Bytes(20, 7)));
          }) == ErrorCode::usage);
    CHECK(code_of([&] {
              (void)Key::import_unwrapped(hsm::KeyType::rsa, 0, secure(Bytes(40, 7)));
          }) == ErrorCode::usage);
}

TEST_CASE("sim::Key::from_public verifies and encrypts with the public half alone") {
    const auto pair = Key::generate(KeyType::ec_p384, 0);
    const auto alone = Key::from_public(pair.public_der());
    CHECK(alone.type() == KeyType::ec_p384);
    const Bytes digest = simtest::digest(Hash::sha384, to_bytes("signed by the pair"));
    const Bytes sig = pair.sign(mech(MechanismKind::ecdsa), digest);
    CHECK_NOTHROW(alone.verify(mech(MechanismKind::ecdsa), digest, sig));
    Bytes bad = sig;
    bad[0] ^= 1;
    CHECK(code_of([&] { alone.verify(mech(MechanismKind::ecdsa), digest, bad); }) ==
          ErrorCode::bad_signature);
    const auto rsa = Key::generate(KeyType::rsa, 2048);
    const auto rsa_alone = Key::from_public(rsa.public_der());
    const Bytes secret = rsa_alone.encrypt(mech(MechanismKind::rsa_pkcs1_enc), to_bytes("for rsa"));
    CHECK(rsa.decrypt(mech(MechanismKind::rsa_pkcs1_enc), secret) == to_bytes("for rsa"));
    CHECK(code_of([] { (void)Key::from_public(to_bytes("not a key")); }) == ErrorCode::usage);
    Bytes trailing = pair.public_der();
    trailing.push_back(0);
    CHECK(code_of([&] { (void)Key::from_public(trailing); }) == ErrorCode::usage);
}
