#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "sim/world.hpp"
#include "sim_test_util.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <fstream>
#include <functional>
#include <regex>

using namespace preloadrun;
using namespace preloadrun::sim;
namespace fs = std::filesystem;

namespace {

Error error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e;
    }
    FAIL("no error");
    return Error(ErrorCode::internal, "");
}

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream(path) << text;
}

SecureBuffer pass(const char* text) {
    return SecureBuffer::from(text);
}

} // namespace

TEST_CASE("sim::World creation, reopening and locking") {
    testsupport::TempDir tmp;
    const auto dir = tmp / "kmdata";
    Bytes id;
    {
        auto world = simtest::make_world(dir);
        CHECK(world->created());
        id = world->id();
        CHECK(id.size() == kWorldIdSize);
        CHECK(simtest::file_mode(dir / "world") == 0600);
        CHECK(simtest::file_mode(dir / "modules") == 0644);
        CHECK(world->modules().empty());

        SUBCASE("a second World on the same directory is refused while the first lives") {
            auto e = error_of([&] { simtest::make_world(dir); });
            CHECK(e.code() == ErrorCode::already_exists);
            CHECK(std::string(e.what()).find("another hsmsim") != std::string::npos);
        }
        auto m1 = world->enrol_module();
        auto m2 = world->enrol_module();
        CHECK(m1.number == 1);
        CHECK(m2.number == 2);
        CHECK(std::regex_match(m1.esn, std::regex("[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}")));
        CHECK(m1.esn != m2.esn);
    }
    auto again = simtest::make_world(dir);
    CHECK_FALSE(again->created());
    CHECK(again->id() == id);
    REQUIRE(again->modules().size() == 2);
    CHECK(again->modules()[1].number == 2);
}

TEST_CASE("sim::World creates a world in an existing empty directory") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    CHECK(world->created());
}

TEST_CASE("sim::World refuses a non-empty directory that is not a world") {
    testsupport::TempDir tmp;
    write_text(tmp / "notes.txt", "hello");
    auto e = error_of([&] { simtest::make_world(tmp.path()); });
    CHECK(e.code() == ErrorCode::usage);
    CHECK(std::string(e.what()).find("notes.txt") != std::string::npos);
    CHECK_FALSE(fs::exists(tmp / ".lock")); // nothing left behind
    CHECK_FALSE(fs::exists(tmp / "world"));
}

TEST_CASE("sim::World refuses a damaged world file") {
    testsupport::TempDir tmp;
    { simtest::make_world(tmp.path()); }
    write_text(tmp / "world", "{\"format\":\"hsmsim-world/1\",\"id\":\"zz\"}");
    auto e = error_of([&] { simtest::make_world(tmp.path()); });
    CHECK(e.code() == ErrorCode::corrupt);
    CHECK(std::string(e.what()).find((tmp / "world").string()) != std::string::npos);
}

TEST_CASE("sim::World tokens") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    auto card = world->create_token(hsm::TokenType::softcard, "alpha", pass("secret one"));
    CHECK(card.name == "alpha");
    CHECK(card.hash.size() == hsm::kTokenHashSize);
    const auto file = tmp / ("card_" + to_hex(card.hash));
    REQUIRE(fs::exists(file));
    CHECK(simtest::file_mode(file) == 0644);
    CHECK(read_text_file(file).find("secret one") == std::string::npos);

    SUBCASE("names are unique per type") {
        CHECK(error_of([&] {
                  world->create_token(hsm::TokenType::softcard, "alpha", pass("x"));
              }).code() == ErrorCode::already_exists);
        CHECK_NOTHROW(world->create_token(hsm::TokenType::cardset, "alpha", pass("x")));
        CHECK(world->tokens().size() == 2);
    }
    SUBCASE("invalid names are refused") {
        CHECK(error_of([&] {
                  world->create_token(hsm::TokenType::softcard, "a b", pass("x"));
              }).code() == ErrorCode::usage);
    }
    SUBCASE("unlocking checks the passphrase") {
        auto record = world->card(card.hash);
        CHECK(record.iterations == simtest::kFastKdf);
        auto key = world->unlock_token(record, pass("secret one"));
        CHECK(key.size() == 32);
        auto e = error_of([&] { world->unlock_token(record, pass("secret two")); });
        CHECK(e.code() == ErrorCode::wrong_passphrase);
        CHECK(std::string(e.what()).find("alpha") != std::string::npos);
        CHECK(std::string(e.what()).find("secret") == std::string::npos);
    }
    SUBCASE("an unknown hash is not found") {
        CHECK(error_of([&] { world->card(Bytes(20, 0)); }).code() == ErrorCode::not_found);
    }
    SUBCASE("a corrupt card file and a foreign file: errors name them, others still list") {
        world->create_token(hsm::TokenType::softcard, "beta", pass("b"));
        const auto bad = tmp / ("card_" + std::string(40, 'e'));
        write_text(bad, "{ this is not json");
        const auto foreign = tmp / ("card_" + std::string(40, 'd'));
        write_text(foreign, R"({"format":"something-else/7"})");
        auto tokens = world->tokens();
        REQUIRE(tokens.size() == 2);
        CHECK(tokens[0].name == "alpha");
        CHECK(tokens[1].name == "beta");
        for (const auto& path : {bad, foreign}) {
            auto e = error_of([&] { world->card(from_hex(path.filename().string().substr(5))); });
            CHECK(e.code() == ErrorCode::corrupt);
            CHECK(std::string(e.what()).find(path.string()) != std::string::npos);
        }
    }
    SUBCASE("a card file copied under another name does not pass for that token") {
        const auto copy = tmp / ("card_" + std::string(40, 'c'));
        fs::copy_file(file, copy);
        CHECK(error_of([&] { world->card(Bytes(20, 0xcc)); }).code() == ErrorCode::corrupt);
        CHECK(world->tokens().size() == 1);
    }
}

TEST_CASE("sim::World persistent keys") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    auto card = world->create_token(hsm::TokenType::softcard, "signer", pass("pw"));
    auto token_key = world->unlock_token(world->card(card.hash), pass("pw"));

    Key module_key = Key::generate(hsm::KeyType::ec_p256, 0);
    KeyRecord m;
    m.ident = new_ident();
    m.label = "module key";
    m.id = {0xaa};
    world->store_key(m, module_key, nullptr);

    Key token_key_pair = Key::generate(hsm::KeyType::ec_p384, 0);
    KeyRecord t;
    t.ident = new_ident();
    t.label = "token key";
    t.protection = Protection{hsm::TokenType::softcard, card.hash};
    world->store_key(t, token_key_pair, &token_key);

    CHECK(simtest::file_mode(tmp / ("key_" + m.ident)) == 0644);
    auto keys = world->keys();
    REQUIRE(keys.size() == 2);
    CHECK(keys[0].label == "module key");
    CHECK_FALSE(keys[0].token);
    CHECK(keys[0].id == Bytes{0xaa});
    CHECK(keys[0].public_der == module_key.public_der());
    CHECK(keys[0].persistent);
    CHECK(keys[1].label == "token key");
    REQUIRE(keys[1].token);
    CHECK(keys[1].token->name == "signer");
    CHECK(keys[1].token->hash == card.hash);
    CHECK(keys[1].type == hsm::KeyType::ec_p384);
    CHECK(keys[1].bits == 384);

    SUBCASE("keys unwrap under the world key or their token key") {
        CHECK(world->unwrap_key(world->key_record(m.ident), nullptr).public_der() ==
              module_key.public_der());
        CHECK(world->unwrap_key(world->key_record(t.ident), &token_key).public_der() ==
              token_key_pair.public_der());
        auto other = world->create_token(hsm::TokenType::softcard, "other", pass("pw"));
        auto other_key = world->unlock_token(world->card(other.hash), pass("pw"));
        CHECK(error_of([&] { world->unwrap_key(world->key_record(t.ident), &other_key); }).code() ==
              ErrorCode::corrupt);
    }
    SUBCASE("a private part moved from another key file does not unwrap") {
        Key other = Key::generate(hsm::KeyType::ec_p256, 0);
        KeyRecord o;
        o.ident = new_ident();
        o.label = "other";
        world->store_key(o, other, nullptr);
        auto victim = world->key_record(m.ident);
        victim.wrapped_private = world->key_record(o.ident).wrapped_private;
        write_file_atomic(tmp / ("key_" + m.ident), encode_key(victim));
        auto e = error_of([&] { world->unwrap_key(world->key_record(m.ident), nullptr); });
        CHECK(e.code() == ErrorCode::corrupt);
        CHECK(std::string(e.what()).find("key_" + m.ident) != std::string::npos);
    }
    SUBCASE("a corrupt key file is skipped in lists and named on lookup") {
        const auto bad = tmp / ("key_" + std::string(40, '0'));
        write_text(bad, R"({"format":"hsmsim-key/1","ident":"nothex"})");
        CHECK(world->keys().size() == 2);
        auto e = error_of([&] { world->key_record(std::string(40, '0')); });
        CHECK(e.code() == ErrorCode::corrupt);
        CHECK(std::string(e.what()).find(bad.string()) != std::string::npos);
    }
    SUBCASE("destroy") {
        world->destroy_key(m.ident);
        CHECK(world->keys().size() == 1);
        CHECK(error_of([&] { world->key_record(m.ident); }).code() == ErrorCode::not_found);
        CHECK(error_of([&] { world->destroy_key(m.ident); }).code() == ErrorCode::not_found);
    }
}
