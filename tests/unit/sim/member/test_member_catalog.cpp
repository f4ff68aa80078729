#include "member/member_catalog.hpp"
#include "member/public_key.hpp"
#include "preloadrun/common/ossl.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>

using namespace preloadrun;
using namespace preloadrun::sim::member;
using testsupport::code_of;

namespace {

// A fresh P-256 key: CKA_EC_PARAMS and CKA_EC_POINT (as a DER OCTET STRING).
std::pair<Bytes, Bytes> ec_key() {
    ossl::Pkey key(EVP_EC_gen("P-256"));
    REQUIRE(key);
    unsigned char point[133];
    size_t length = 0;
    REQUIRE(EVP_PKEY_get_octet_string_param(key.get(), OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point,
                                            &length) == 1);
    Bytes der{0x04, static_cast<std::uint8_t>(length)};
    der.insert(der.end(), point, point + length);
    const Bytes params{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    return {params, der};
}

// What a worker reports of a token holding EC key pair `pub` under id 01.
worker::InventoryReply holding(const std::pair<Bytes, Bytes>& pub) {
    worker::InventoryReply inventory;
    auto* priv = inventory.add_keys();
    priv->set_handle(10);
    priv->set_object_class(CKO_PRIVATE_KEY);
    priv->set_key_type(CKK_EC);
    priv->set_id("\x01");
    priv->set_label("ec-key");
    priv->set_bits(256);
    auto spki = ec_public_key(pub.first, pub.second);
    REQUIRE(spki);
    auto* public_key = inventory.add_keys();
    public_key->set_handle(11);
    public_key->set_object_class(CKO_PUBLIC_KEY);
    public_key->set_key_type(CKK_EC);
    public_key->set_id("\x01");
    public_key->set_public_der(std::string(spki->spki.begin(), spki->spki.end()));
    return inventory;
}

} // namespace

TEST_CASE("member::MemberCatalog: token sets, keys, and a member holding another key") {
    MemberCatalog catalog(Bytes(20, 1));
    catalog.set_sets({{"signing", {"a", "b"}}});
    std::vector<hsm::TokenInfo> tokens;
    catalog.visit_tokens("", [&](const hsm::TokenInfo& t) {
        tokens.push_back(t);
        return true;
    });
    REQUIRE(tokens.size() == 1);
    CHECK(tokens[0] == MemberCatalog::token_of("signing"));
    CHECK(tokens[0].hash.size() == hsm::kTokenHashSize);

    const auto key = ec_key();
    auto on_a = catalog.add_inventory("a", "signing", holding(key));
    const auto ident = MemberCatalog::ident_of("signing", Bytes{1}, CKK_EC);
    REQUIRE(on_a.count(ident) == 1);
    CHECK(on_a[ident].private_handle == 10);
    CHECK(on_a[ident].public_handle == 11);
    auto info = catalog.key(ident).info;
    CHECK(info.label == "ec-key");
    CHECK(info.type == hsm::KeyType::ec_p256);
    CHECK(info.token == MemberCatalog::token_of("signing"));

    // The same key on b: served there too.
    CHECK(catalog.add_inventory("b", "signing", holding(key)).count(ident) == 1);
    CHECK_FALSE(catalog.is_refused("b", ident));
    // b re-initialised with another key under the same id: refused there,
    // and the catalog keeps the first one.
    CHECK(catalog.add_inventory("b", "signing", holding(ec_key())).count(ident) == 0);
    CHECK(catalog.is_refused("b", ident));
    CHECK_FALSE(catalog.is_refused("a", ident));
    CHECK(catalog.key(ident).info.public_der == info.public_der);
    // And back to the same key: served again.
    CHECK(catalog.add_inventory("b", "signing", holding(key)).count(ident) == 1);
    CHECK_FALSE(catalog.is_refused("b", ident));

    // A key of a set that left the file is not listed.
    catalog.set_sets({});
    std::size_t keys = 0;
    catalog.visit_keys("", [&](const hsm::KeyInfo&) { return ++keys, true; });
    CHECK(keys == 0);
    CHECK(code_of([&] { catalog.key("no such ident"); }) == ErrorCode::not_found);
    CHECK(code_of([&] {
              catalog.create_token(hsm::TokenType::softcard, "x", SecureBuffer::from("p"), 0);
          }) == ErrorCode::usage);
}

TEST_CASE("member::MemberCatalog: a private key without a public part is not served") {
    MemberCatalog catalog(Bytes(20, 1));
    catalog.set_sets({{"s", {"a"}}});
    auto inventory = holding(ec_key());
    inventory.mutable_keys()->RemoveLast(); // no public key object
    CHECK(catalog.add_inventory("a", "s", inventory).empty());
}
