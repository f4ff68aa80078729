#include "freed_memory.hpp"
#include "model/world_format.hpp"
#include "preloadrun/common/error.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

std::string corrupt_message(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::corrupt);
        return e.what();
    }
    FAIL("no error");
    return {};
}

KeyRecord sample_key() {
    KeyRecord r;
    r.ident = std::string(40, 'a');
    r.label = "signing key";
    r.id = {1, 2, 3};
    r.type = hsm::KeyType::ec_p256;
    r.bits = 256;
    r.protection = Protection{hsm::TokenType::softcard, Bytes(20, 0xab)};
    r.public_der = {0x30, 0x01, 0x00};
    r.wrapped_private = Bytes(40, 9);
    return r;
}

CardRecord sample_card() {
    return {hsm::TokenType::softcard,
            "a",
            Bytes(20, 3),
            1000,
            Bytes(16, 4),
            Bytes(60, 5),
            std::nullopt};
}

} // namespace

TEST_CASE("sim::world_format round trips") {
    SUBCASE("world") {
        WorldRecord w{Bytes(20, 1), SecureBuffer(Bytes(32, 2).data(), 32)};
        auto back = decode_world(encode_world(w).span(), "world");
        CHECK(back.id == w.id);
        CHECK(Bytes(back.key.data(), back.key.data() + 32) == Bytes(32, 2));
    }
    SUBCASE("modules") {
        std::vector<EnrolledModule> m{{1, "A1B2-C3D4-E5F6"}, {2, "0000-1111-2222"}};
        CHECK(decode_modules(encode_modules(m), "modules") == m);
        CHECK(decode_modules(encode_modules({}), "modules").empty());
    }
    SUBCASE("counters") {
        std::vector<ModuleCounters> c{{1, 7, 65537}, {3, 0, 1}, {4, kMaxCounter, kMaxCounter}};
        CHECK(decode_counters(encode_counters(c), "counters") == c);
        CHECK(decode_counters(encode_counters({}), "counters").empty());
    }
    SUBCASE("card") {
        CardRecord c{hsm::TokenType::cardset,
                     "ocs-1",
                     Bytes(20, 3),
                     1000,
                     Bytes(16, 4),
                     Bytes(60, 5),
                     std::nullopt};
        auto text = encode_card(c);
        CHECK(text.find("\"format\": \"hsmsim-card/1\"") != std::string::npos);
        CHECK(text.find("pbkdf2-sha256") != std::string::npos);
        auto back = decode_card(text, "card_x");
        CHECK(back.type == c.type);
        CHECK(back.name == c.name);
        CHECK(back.hash == c.hash);
        CHECK(back.iterations == 1000);
        CHECK(back.salt == c.salt);
        CHECK(back.wrapped_key == c.wrapped_key);
    }
    SUBCASE("key") {
        auto r = sample_key();
        auto text = encode_key(r);
        CHECK(text.find("softcard:" + std::string(40, 'a').replace(
                                          0, 40, to_hex(Bytes(20, 0xab)))) != std::string::npos);
        auto back = decode_key(text, "key_x");
        CHECK(back.ident == r.ident);
        CHECK(back.label == r.label);
        CHECK(back.id == r.id);
        CHECK(back.type == r.type);
        CHECK(back.bits == 256);
        CHECK(back.protection == r.protection);
        CHECK(back.public_der == r.public_der);
        CHECK(back.wrapped_private == r.wrapped_private);
        r.protection.reset();
        CHECK_FALSE(decode_key(encode_key(r), "key_x").protection);
        // What a key may do: written only when set, so older keys read the same.
        CHECK_FALSE(back.extractable);
        CHECK_FALSE(back.imported);
        CHECK(back.check_value.empty());
        CHECK(text.find("extractable") == std::string::npos);
        r.extractable = true;
        r.imported = true;
        r.check_value = {1, 2, 3};
        auto flagged = decode_key(encode_key(r), "key_x");
        CHECK(flagged.extractable);
        CHECK(flagged.imported);
        CHECK(flagged.check_value == Bytes{1, 2, 3});
    }
}

namespace {

std::span<const std::uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

const std::string kKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const std::string kIdHex(40, 'a');

} // namespace

TEST_CASE("sim::world file: the world key") {
    SUBCASE("the file is the JSON object it always was") {
        SecureBuffer key(32);
        for (std::size_t i = 0; i < 32; ++i) {
            key.data()[i] = static_cast<std::uint8_t>(i);
        }
        const auto text = encode_world(WorldRecord{Bytes(20, 0xaa), std::move(key)});
        CHECK(std::string(text.view()) == "{\n  \"format\": \"hsmsim-world/1\",\n  \"id\": \"" +
                                              kIdHex + "\",\n  \"key\": \"" + kKeyHex + "\"\n}\n");
    }
    SUBCASE("read in any layout and order") {
        for (const std::string& text : std::vector<std::string>{
                 R"({"format":"hsmsim-world/1","id":")" + kIdHex + R"(","key":")" + kKeyHex +
                     R"("})",
                 R"( { "key" : ")" + kKeyHex + R"(" , "id": ")" + kIdHex +
                     R"(", "format": "hsmsim-world/1", "note": {"key": "x"} } )",
                 R"({"format":"hsmsim-world/1","id":")" + kIdHex + R"(","key":")" +
                     "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F" +
                     R"("})"}) {
            CAPTURE(text);
            auto world = decode_world(bytes_of(text), "w");
            REQUIRE(world.key.size() == 32);
            CHECK(world.key.data()[31] == 0x1f);
            CHECK(world.id == Bytes(20, 0xaa));
        }
    }
    SUBCASE("a damaged key is refused, naming the file") {
        const std::string head = R"({"format":"hsmsim-world/1","id":")" + kIdHex + R"(")";
        for (const std::string& tail : std::vector<std::string>{
                 "}", R"(,"key":"00"})", R"(,"key":")" + kKeyHex + R"(00"})",
                 R"(,"key":")" + std::string(63, '0') + R"(g"})", R"(,"key":1})",
                 R"(,"key":")" + kKeyHex + R"(","key":")" + kKeyHex + R"("})",
                 R"(,"key":"\u0030)" + kKeyHex.substr(1) + R"("})",
                 // "key" twice, once spelt with an escape: a JSON reader and
                 // the scan that keeps the key from the parser could each
                 // take another one.
                 R"(,"key":")" + kKeyHex + R"(","k\u0065y":")" + std::string(64, '1') + R"("})",
                 R"(,"k\u0065y":")" + std::string(64, '1') + R"(","key":")" + kKeyHex + R"("})",
                 R"(,"other":{"key":")" + kKeyHex + R"("}})", R"(,"key":")" + kKeyHex}) {
            CAPTURE(tail);
            const auto text = head + tail;
            CHECK(corrupt_message([&] {
                      decode_world(bytes_of(text), "the-world");
                  }).find("the-world") != std::string::npos);
        }
    }
    SUBCASE("no freed heap block ever held the key's text") {
        SecureBuffer key(32);
        for (std::size_t i = 0; i < 32; ++i) {
            key.data()[i] = static_cast<std::uint8_t>(i);
        }
        WorldRecord record{Bytes(20, 0xaa), std::move(key)};
        std::vector<std::string> parts;
        for (std::size_t at = 0; at < kKeyHex.size(); at += 16) {
            parts.push_back(kKeyHex.substr(at, 16));
        }
        std::size_t hits = 0;
        std::size_t blocks = 0;
        {
            simtest::FreedWatch watch(parts);
            auto text = encode_world(record);
            auto back = decode_world(text.span(), "world");
            CHECK(back.key.size() == 32);
            hits = watch.hits();
            blocks = watch.blocks();
        }
        CHECK(blocks > 0); // the parser worked on the heap, and was watched
        CHECK(hits == 0);
    }
}

TEST_CASE("sim::world_format rejects damaged files, naming them") {
    CHECK(corrupt_message([] { decode_card("{not json", "/w/card_1"); }).find("/w/card_1") == 0);
    CHECK(corrupt_message([] { decode_card("[1,2]", "f"); }).find("not a JSON object") !=
          std::string::npos);
    CHECK(corrupt_message([] { decode_card(R"({"name":"x"})", "f"); }).find("format") !=
          std::string::npos);
    CHECK(corrupt_message([] { decode_card(encode_modules({}), "f"); }).find("hsmsim-modules/1") !=
          std::string::npos);
    auto key = encode_key(sample_key());
    auto bad_hex = key;
    bad_hex.replace(bad_hex.find("\"wrapped_private\": \"") + 20, 2, "zz");
    CHECK(corrupt_message([&] { decode_key(bad_hex, "f"); }).find("not hex") != std::string::npos);
    auto bad_type = key;
    bad_type.replace(bad_type.find("ec-p256"), 7, "dsa-512");
    CHECK(corrupt_message([&] { decode_key(bad_type, "f"); }).find("key type") !=
          std::string::npos);
    auto not_bool = key;
    not_bool.replace(not_bool.find("\"label\""), 7, "\"extractable\": 1, \"label\"");
    CHECK(corrupt_message([&] { decode_key(not_bool, "f"); }).find("extractable") !=
          std::string::npos);
    auto short_check = key;
    short_check.replace(short_check.find("\"label\""), 7, "\"check_value\": \"0102\", \"label\"");
    corrupt_message([&] { decode_key(short_check, "f"); });
    auto bad_prot = key;
    bad_prot.replace(bad_prot.find("softcard:"), 9, "smartcard:");
    corrupt_message([&] { decode_key(bad_prot, "f"); });
    auto c = sample_card();
    auto many = encode_card(c);
    many.replace(many.find("1000"), 4, "99999999999");
    CHECK(corrupt_message([&] { decode_card(many, "f"); }).find("iterations") != std::string::npos);
    corrupt_message([] {
        decode_modules(R"({"format":"hsmsim-modules/1","modules":[{"number":2,"esn":"x"}]})", "f");
    });
    const std::string counter = R"({"format":"hsmsim-counters/1","modules":[)";
    corrupt_message([&] {
        decode_counters(counter + R"({"number":2,"generation":1,"handles":1},)" +
                            R"({"number":2,"generation":1,"handles":1}]})",
                        "f");
    });
    corrupt_message(
        [&] { decode_counters(counter + R"({"number":1,"generation":1,"handles":0}]})", "f"); });
    corrupt_message(
        [&] { decode_counters(counter + R"({"number":1,"generation":-1,"handles":1}]})", "f"); });
    corrupt_message([&] {
        decode_counters(counter + R"({"number":1,"generation":4611686018427387905,"handles":1}]})",
                        "f");
    });
}

TEST_CASE("sim::valid_token_name and valid_ident") {
    CHECK(valid_token_name("a"));
    CHECK(valid_token_name("My-card_1.2"));
    CHECK(valid_token_name(std::string(64, 'x')));
    CHECK_FALSE(valid_token_name(""));
    CHECK_FALSE(valid_token_name(std::string(65, 'x')));
    CHECK_FALSE(valid_token_name("a b"));
    CHECK_FALSE(valid_token_name("a/b"));
    CHECK_FALSE(valid_token_name("caf\xc3\xa9"));
    CHECK(valid_ident(std::string(40, 'f')));
    CHECK_FALSE(valid_ident(std::string(40, 'F')));
    CHECK_FALSE(valid_ident(std::string(39, 'a')));
    CHECK_FALSE(valid_ident("../" + std::string(37, 'a')));
}

TEST_CASE("sim::world_format records the creator of cards and keys, optionally") {
    auto key = sample_key();
    CHECK_FALSE(decode_key(encode_key(key), "f").creator);
    CHECK(encode_key(key).find("creator") == std::string::npos); // as files were before
    key.creator = 2001;
    CHECK(encode_key(key).find("\"creator\": 2001") != std::string::npos);
    CHECK(decode_key(encode_key(key), "f").creator == std::optional<uid_t>(2001));
    key.creator = 0;
    CHECK(decode_key(encode_key(key), "f").creator == std::optional<uid_t>(0));

    auto c = sample_card();
    CHECK_FALSE(decode_card(encode_card(c), "f").creator);
    c.creator = 2000;
    CHECK(decode_card(encode_card(c), "f").creator == std::optional<uid_t>(2000));

    SUBCASE("a creator that is not a uid is corrupt") {
        key.creator = 7;
        for (const char* bad : {"-1", "\"7\"", "4294967295", "1e3"}) {
            auto text = encode_key(key);
            text.replace(text.find("\"creator\": 7") + 11, 1, bad);
            CAPTURE(text);
            CHECK(corrupt_message([&] { decode_key(text, "f"); }).find("creator") !=
                  std::string::npos);
        }
    }
}
