#include "model/world.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <fstream>
#include <functional>
#include <regex>
#include <sys/stat.h>
#include <unistd.h>

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
        CHECK(simtest::file_mode(dir) == 0700);
        CHECK(simtest::file_mode(dir / "world") == 0600);
        CHECK(simtest::file_mode(dir / "modules") == 0600);
        CHECK(simtest::file_mode(dir / ".lock") == 0600);
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
    CHECK(simtest::file_mode(file) == 0600);
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

    CHECK(simtest::file_mode(tmp / ("key_" + m.ident)) == 0600);
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
        CHECK(world->unwrap_key(world->key_record(m.ident), nullptr)->public_der() ==
              module_key.public_der());
        CHECK(world->unwrap_key(world->key_record(t.ident), &token_key)->public_der() ==
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
    SUBCASE("a key file read before is read again once it changed, even in place") {
        REQUIRE(world->key_record(m.ident).label != "renamed in place");
        auto changed = world->key_record(m.ident);
        changed.label = "renamed in place";
        const auto text = encode_key(changed);
        {
            std::ofstream out(tmp / ("key_" + m.ident), std::ios::binary | std::ios::trunc);
            out.write(text.data(), static_cast<std::streamsize>(text.size()));
        }
        CHECK(world->key_record(m.ident).label == "renamed in place");
        // The decoded key is the same key: shared, not decoded again.
        CHECK(world->unwrap_key(world->key_record(m.ident), nullptr) ==
              world->unwrap_key(world->key_record(m.ident), nullptr));
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

namespace {

// A stored key (an EC P-256 pair) with that label and id, under `protection`.
KeyRecord stored_key(World& world, const std::string& label, Bytes id,
                     std::optional<Protection> protection = std::nullopt,
                     const SecureBuffer* token_key = nullptr, bool refuse_duplicate = false) {
    KeyRecord record;
    record.ident = new_ident();
    record.label = label;
    record.id = std::move(id);
    record.protection = std::move(protection);
    world.store_key(record, Key::generate(hsm::KeyType::ec_p256, 0), token_key, refuse_duplicate);
    return record;
}

} // namespace

TEST_CASE("sim::World refuses a duplicate label or id under the same protection when asked") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    auto card = world->create_token(hsm::TokenType::softcard, "signer", pass("pw"));
    auto token_key = world->unlock_token(world->card(card.hash), pass("pw"));
    const Protection by_card{hsm::TokenType::softcard, card.hash};
    const auto first = stored_key(*world, "k", {0x01}, by_card, &token_key);
    stored_key(*world, "m", {0x01});

    SUBCASE("the same label, or the same id, under the same token") {
        auto e = error_of([&] { stored_key(*world, "k", {0x02}, by_card, &token_key, true); });
        CHECK(e.code() == ErrorCode::already_exists);
        CHECK(std::string(e.what()) == "a key protected by softcard 'signer' already has the "
                                       "label 'k' (key " +
                                           first.ident + ")");
        e = error_of([&] { stored_key(*world, "other", {0x01}, by_card, &token_key, true); });
        CHECK(e.code() == ErrorCode::already_exists);
        CHECK(std::string(e.what()).find("the id 01") != std::string::npos);
        CHECK(error_of([&] { world->refuse_duplicate("k", {}, by_card); }).code() ==
              ErrorCode::already_exists);
        CHECK(world->keys().size() == 2); // nothing written
    }
    SUBCASE("module protection is a protection of its own") {
        auto e = error_of([&] { stored_key(*world, "m", {}, std::nullopt, nullptr, true); });
        CHECK(std::string(e.what()).find("a module-protected key already has the label 'm'") == 0);
        stored_key(*world, "k", {0x02}, std::nullopt, nullptr, true);
        stored_key(*world, "new", {}, by_card, &token_key, true); // no id: no id to repeat
        stored_key(*world, "new2", {}, by_card, &token_key, true);
        CHECK(world->keys().size() == 5);
    }
    SUBCASE("allowed unless asked") {
        stored_key(*world, "k", {0x01}, by_card, &token_key);
        CHECK(world->keys().size() == 3);
    }
}

TEST_CASE("sim::World destroys a token, with its keys or none") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    auto card = world->create_token(hsm::TokenType::softcard, "signer", pass("pw"));
    auto other = world->create_token(hsm::TokenType::softcard, "other", pass("pw"));
    auto token_key = world->unlock_token(world->card(card.hash), pass("pw"));
    auto other_key = world->unlock_token(world->card(other.hash), pass("pw"));
    const Protection by_card{hsm::TokenType::softcard, card.hash};
    const auto k1 = stored_key(*world, "k1", {0x01}, by_card, &token_key);
    const auto k2 = stored_key(*world, "k2", {0x02}, by_card, &token_key);
    stored_key(*world, "kept", {0x01}, Protection{hsm::TokenType::softcard, other.hash},
               &other_key);
    stored_key(*world, "module", {0x01});
    const auto bytes = world->usage().bytes();

    SUBCASE("refused while it protects keys, naming them") {
        auto e = error_of([&] { world->destroy_token(card.hash, false); });
        CHECK(e.code() == ErrorCode::conflict);
        CHECK(std::string(e.what()).find("softcard 'signer' protects 2 key(s) ('k1', 'k2')") == 0);
        CHECK(world->tokens().size() == 2);
        CHECK(world->keys().size() == 4);
    }
    SUBCASE("with its keys: the others stay, nothing is left aside") {
        auto destroyed = world->destroy_token(card.hash, true);
        CHECK(destroyed.token.name == "signer");
        CHECK(destroyed.keys.size() == 2);
        CHECK(world->tokens().size() == 1);
        auto keys = world->keys();
        REQUIRE(keys.size() == 2);
        CHECK(keys[0].label == "kept");
        CHECK(keys[1].label == "module");
        CHECK(error_of([&] { world->card(card.hash); }).code() == ErrorCode::not_found);
        CHECK(error_of([&] { world->key_record(k1.ident); }).code() == ErrorCode::not_found);
        for (const auto& entry : fs::directory_iterator(tmp.path())) {
            CHECK(entry.path().filename().string().find(".tmp.") == std::string::npos);
        }
        CHECK(world->usage().bytes() < bytes);
        // Its name is free again; a key for it now is refused.
        CHECK(error_of([&] { stored_key(*world, "late", {}, by_card, &token_key); }).code() ==
              ErrorCode::not_found);
        world->create_token(hsm::TokenType::softcard, "signer", pass("pw"));
    }
    SUBCASE("a token without keys") {
        world->destroy_key(k1.ident);
        world->destroy_key(k2.ident);
        CHECK(world->destroy_token(card.hash, false).keys.empty());
        CHECK(world->tokens().size() == 1);
    }
    SUBCASE("when a file cannot be set aside, everything stays") {
        // A directory where the card's temporary name would go: the rename
        // of the card, the last, fails after the keys were set aside.
        fs::create_directory(tmp / (".card_" + to_hex(card.hash) + ".tmp.destroyed"));
        CHECK(error_of([&] { world->destroy_token(card.hash, true); }).code() == ErrorCode::io);
        CHECK(world->tokens().size() == 2);
        CHECK(world->keys().size() == 4);
        CHECK(world->key_record(k2.ident).label == "k2");
    }
    SUBCASE("no such token") {
        CHECK(error_of([&] { world->destroy_token(Bytes(20, 0x11), true); }).code() ==
              ErrorCode::not_found);
    }
}

TEST_CASE("sim::World is private to its owner") {
    testsupport::TempDir tmp;
    const auto dir = tmp / "kmdata";

    SUBCASE("a new directory is 0700 whatever the umask, and every file 0600") {
        const mode_t old = ::umask(0);
        auto world = simtest::make_world(dir);
        ::umask(old);
        world->enrol_module();
        auto card = world->create_token(hsm::TokenType::softcard, "c", pass("p"));
        KeyRecord r;
        r.ident = new_ident();
        world->store_key(r, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
        CHECK(simtest::file_mode(dir) == 0700);
        for (const auto& entry : fs::directory_iterator(dir)) {
            CAPTURE(entry.path());
            CHECK(simtest::file_mode(entry.path()) == 0600);
        }
    }
    SUBCASE("a directory that group or others may use is refused, naming the fix") {
        for (mode_t mode : {0755, 0750, 0701, 0770, 0707, 0740}) {
            CAPTURE(mode);
            fs::create_directory(dir);
            ::chmod(dir.c_str(), mode);
            std::string message;
            CHECK(testsupport::code_of([&] { simtest::make_world(dir); }, &message) ==
                  ErrorCode::permission);
            CHECK(message.find("chmod -R go-rwx " + dir.string()) != std::string::npos);
            CHECK(fs::is_empty(dir)); // nothing created in it, not even the lock
            fs::remove(dir);
        }
    }
    SUBCASE("an existing world made readable by others is refused") {
        { simtest::make_world(dir); }
        ::chmod(dir.c_str(), 0755);
        CHECK(testsupport::code_of([&] { simtest::make_world(dir); }) == ErrorCode::permission);
        ::chmod(dir.c_str(), 0700);
        CHECK_NOTHROW(simtest::make_world(dir));
    }
    SUBCASE("a directory owned by another uid is refused") {
        fs::create_directory(dir);
        ::chmod(dir.c_str(), 0700);
        auto options = simtest::world_options(dir);
        options.owner = ::geteuid() + 1;
        std::string message;
        CHECK(testsupport::code_of([&] { World world(options); }, &message) ==
              ErrorCode::permission);
        CHECK(message.find("uid " + std::to_string(::geteuid() + 1)) != std::string::npos);
        CHECK(message.find("chown") != std::string::npos);
    }
    SUBCASE("a symlink to a directory is refused, not followed") {
        const auto real = tmp / "real";
        fs::create_directory(real);
        ::chmod(real.c_str(), 0700);
        fs::create_directory_symlink(real, dir);
        CHECK(testsupport::code_of([&] { simtest::make_world(dir); }) == ErrorCode::permission);
        CHECK(fs::is_empty(real));
    }
    SUBCASE("a missing parent is not created") {
        CHECK(testsupport::code_of([&] { simtest::make_world(tmp / "no" / "kmdata"); }) ==
              ErrorCode::not_found);
    }
}

TEST_CASE("sim::World records who created tokens and keys") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    auto card = world->create_token(hsm::TokenType::softcard, "c", pass("p"), 2000);
    CHECK(world->card(card.hash).creator == std::optional<uid_t>(2000));
    KeyRecord r;
    r.ident = new_ident();
    r.creator = 2001;
    world->store_key(r, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
    CHECK(world->key_record(r.ident).creator == std::optional<uid_t>(2001));
    KeyRecord anonymous;
    anonymous.ident = new_ident();
    world->store_key(anonymous, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
    CHECK_FALSE(world->key_record(anonymous.ident).creator);
}

namespace {

std::unique_ptr<World> limited_world(const fs::path& dir, WorldLimits limits) {
    return simtest::make_world(dir, limits);
}

std::string store_module_key(World& world, std::optional<uid_t> creator) {
    KeyRecord r;
    r.ident = new_ident();
    r.label = "k";
    r.creator = creator;
    world.store_key(r, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
    return r.ident;
}

} // namespace

TEST_CASE("sim::World quotas") {
    testsupport::TempDir tmp;
    WorldLimits limits;
    limits.max_keys_per_uid = 2;
    limits.max_tokens_per_uid = 1;

    SUBCASE("keys per uid: refused past the limit, other uids unaffected") {
        auto world = limited_world(tmp.path(), limits);
        const auto first = store_module_key(*world, 2001);
        store_module_key(*world, 2001);
        std::string message;
        CHECK(testsupport::code_of([&] { store_module_key(*world, 2001); }, &message) ==
              ErrorCode::limit);
        CHECK(message.find("--max-keys-per-uid 2") != std::string::npos);
        CHECK(message.find("uid 2001") != std::string::npos);
        CHECK(world->keys().size() == 2); // nothing written
        CHECK_NOTHROW(store_module_key(*world, 2000));
        SUBCASE("destroying one makes room") {
            world->destroy_key(first);
            CHECK_NOTHROW(store_module_key(*world, 2001));
        }
    }
    SUBCASE("tokens per uid") {
        auto world = limited_world(tmp.path(), limits);
        world->create_token(hsm::TokenType::softcard, "one", pass("p"), 2001);
        std::string message;
        CHECK(testsupport::code_of(
                  [&] { world->create_token(hsm::TokenType::cardset, "two", pass("p"), 2001); },
                  &message) == ErrorCode::limit);
        CHECK(message.find("--max-tokens-per-uid 1") != std::string::npos);
        CHECK(world->tokens().size() == 1);
        CHECK_NOTHROW(world->create_token(hsm::TokenType::softcard, "two", pass("p"), 2000));
    }
    SUBCASE("the counts survive a restart: they come from the files") {
        {
            auto world = limited_world(tmp.path(), limits);
            store_module_key(*world, 2001);
            store_module_key(*world, 2001);
            store_module_key(*world, std::nullopt); // recorded for nobody
            world->create_token(hsm::TokenType::softcard, "one", pass("p"), 2001);
        }
        auto world = limited_world(tmp.path(), limits);
        CHECK(world->usage().keys_of(2001) == 2);
        CHECK(world->usage().tokens_of(2001) == 1);
        CHECK(testsupport::code_of([&] { store_module_key(*world, 2001); }) == ErrorCode::limit);
    }
    SUBCASE("the bytes of the whole world") {
        std::uint64_t base = 0;
        std::uint64_t one_key = 0;
        {
            auto world = limited_world(tmp.path(), limits);
            base = world->usage().bytes();
            CHECK(base > 0); // world, modules
            store_module_key(*world, 2000);
            one_key = world->usage().bytes() - base;
            CHECK(one_key > 0);
        }
        limits.max_bytes = base + one_key + one_key / 2; // room for one more key, not two
        auto world = limited_world(tmp.path(), limits);
        CHECK(world->usage().bytes() == base + one_key); // counted from the files
        world->destroy_key(world->keys().front().ident);
        CHECK(world->usage().bytes() == base);
        store_module_key(*world, 2000);
        std::string message;
        CHECK(testsupport::code_of([&] { store_module_key(*world, 2001); }, &message) ==
              ErrorCode::limit);
        CHECK(message.find("--max-world-mib") != std::string::npos);
        CHECK(world->keys().size() == 1);
    }
}

TEST_CASE("sim::World visits keys and tokens in order, from a cursor") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    std::vector<std::string> idents;
    for (int i = 0; i < 5; ++i) {
        KeyRecord r;
        r.ident = new_ident();
        r.label = "k" + std::to_string(4 - i); // labels in the other order
        world->store_key(r, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
        idents.push_back(r.ident);
    }
    std::sort(idents.begin(), idents.end());
    auto visited = [&](const std::string& after, std::size_t stop_after) {
        std::vector<std::string> out;
        world->visit_keys(after, [&](const hsm::KeyInfo& key) {
            out.push_back(key.ident);
            return out.size() < stop_after;
        });
        return out;
    };
    CHECK(visited("", 100) == idents);
    CHECK(visited(idents[1], 100) == std::vector<std::string>(idents.begin() + 2, idents.end()));
    CHECK(visited("", 2) == std::vector<std::string>(idents.begin(), idents.begin() + 2));
    CHECK(visited(idents.back(), 100).empty());
    // keys() keeps its order: label, then ident.
    auto all = world->keys();
    REQUIRE(all.size() == 5);
    CHECK(all.front().label == "k0");

    auto a = world->create_token(hsm::TokenType::softcard, "a", pass("p"));
    auto b = world->create_token(hsm::TokenType::softcard, "b", pass("p"));
    std::vector<std::string> hashes{to_hex(a.hash), to_hex(b.hash)};
    std::sort(hashes.begin(), hashes.end());
    std::vector<std::string> seen;
    world->visit_tokens(hashes[0], [&](const hsm::TokenInfo& t) {
        seen.push_back(to_hex(t.hash));
        return true;
    });
    CHECK(seen == std::vector<std::string>{hashes[1]});
}
