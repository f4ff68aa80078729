#include "model/keywrap.hpp"
#include "preloadrun/common/error.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

Bytes to_vec(const SecureBuffer& b) {
    return Bytes(b.data(), b.data() + b.size());
}

} // namespace

TEST_CASE("sim::random_bytes gives the size asked and differs each time") {
    CHECK(random_bytes(0).empty());
    CHECK(random_bytes(33).size() == 33);
    CHECK(random_bytes(16) != random_bytes(16));
    CHECK(random_secret(32).size() == 32);
}

TEST_CASE("sim::sha256 matches the known answer") {
    CHECK(to_hex(sha256(to_bytes("abc"))) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("sim::derive_key is PBKDF2-HMAC-SHA256") {
    // RFC 7914 section 11 test vector (first 32 bytes).
    auto key = derive_key(SecureBuffer::from("passwd"), to_bytes("salt"), 1);
    CHECK(to_hex(key.span()) == "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc");
    SUBCASE("salt and iterations matter") {
        CHECK(to_vec(derive_key(SecureBuffer::from("passwd"), to_bytes("salt"), 2)) != to_vec(key));
        CHECK(to_vec(derive_key(SecureBuffer::from("passwd"), to_bytes("pepper"), 1)) !=
              to_vec(key));
    }
}

TEST_CASE("sim::wrap and unwrap") {
    const Bytes salt = random_bytes(kKdfSaltSize);
    auto kek = derive_key(SecureBuffer::from("correct horse"), salt, 10);
    auto secret = random_secret(32);
    Bytes blob = wrap(kek, secret.span(), "hsmsim token key abc");
    REQUIRE(blob.size() == kWrapIvSize + 32 + kWrapTagSize);

    SUBCASE("the right passphrase unwraps") {
        auto again = derive_key(SecureBuffer::from("correct horse"), salt, 10);
        CHECK(to_vec(unwrap(again, blob, "hsmsim token key abc")) == to_vec(secret));
    }
    SUBCASE("a wrong passphrase fails") {
        auto wrong = derive_key(SecureBuffer::from("correct horsE"), salt, 10);
        CHECK_THROWS_AS(unwrap(wrong, blob, "hsmsim token key abc"), Error);
    }
    SUBCASE("a tampered blob fails") {
        for (std::size_t at : {std::size_t{0}, kWrapIvSize + 3, blob.size() - 1}) {
            Bytes bad = blob;
            bad[at] ^= 0x01;
            CHECK_THROWS_AS(unwrap(kek, bad, "hsmsim token key abc"), Error);
        }
    }
    SUBCASE("a blob moved to another purpose fails (AAD binding)") {
        try {
            unwrap(kek, blob, "hsmsim token key abd");
            FAIL("unwrapped under another AAD");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::crypto);
        }
    }
    SUBCASE("a truncated blob fails") {
        CHECK_THROWS_AS(unwrap(kek, Bytes(blob.begin(), blob.begin() + 20), "hsmsim token key abc"),
                        Error);
    }
    SUBCASE("two wraps of the same secret differ (random IV)") {
        CHECK(wrap(kek, secret.span(), "x") != wrap(kek, secret.span(), "x"));
    }
}
