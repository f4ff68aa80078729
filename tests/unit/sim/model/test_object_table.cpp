#include "model/object_table.hpp"
#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

using testsupport::code_of;

constexpr uid_t kVictim = 2000;
constexpr uid_t kAttacker = 2001;

ObjectTable::Object token_of(uid_t owner, ClientId client = kNoClient) {
    auto token = std::make_shared<TokenObject>(
        TokenObject{{hsm::TokenType::softcard, "t", Bytes(20, 1)}, SecureBuffer::from("k")});
    return {owner, client, std::move(token), nullptr};
}

ObjectTable::Object key_of(uid_t owner, hsm::ObjectHandle token = 0, ClientId client = kNoClient) {
    auto key = std::make_shared<KeyObject>();
    key->info.label = "k";
    key->token_handle = token;
    return {owner, client, nullptr, std::move(key)};
}

} // namespace

TEST_CASE("sim::ObjectTable counts each uid's objects") {
    ObjectTable table(1, {});
    auto token = table.add(token_of(kVictim));
    table.add(key_of(kVictim, token));
    table.add(key_of(kVictim));
    table.add(key_of(kAttacker));
    CHECK(table.size() == 4);
    CHECK(table.held_by(kVictim) == 3);
    CHECK(table.held_by(kAttacker) == 1);
    CHECK(table.held_by(4242) == 0);

    SUBCASE("unloading a token gives back its keys' places too") {
        CHECK(table.erase(token, kVictim).size() == 2);
        CHECK(table.held_by(kVictim) == 1);
        CHECK(table.size() == 2);
    }
    SUBCASE("another uid's object is neither found nor unloaded") {
        CHECK(code_of([&] { table.erase(token, kAttacker); }) == ErrorCode::permission);
        CHECK(table.held_by(kVictim) == 3);
    }
    SUBCASE("clearing forgets every share, never the handles") {
        auto dropped = table.take_all();
        CHECK(dropped.size() == 4);
        CHECK(table.size() == 0);
        CHECK(table.held_by(kVictim) == 0);
        CHECK(table.add(key_of(kVictim)) > dropped.rbegin()->first);
    }
}

TEST_CASE("sim::ObjectTable one uid fills its share, not the module") {
    ObjectTable table(3, {100, 4});
    for (int i = 0; i < 4; ++i) {
        table.add(key_of(kAttacker));
    }
    std::string message;
    CHECK(code_of([&] { table.add(key_of(kAttacker)); }, &message) == ErrorCode::limit);
    CHECK(message.find("uid 2001") != std::string::npos);
    CHECK(message.find("module 3") != std::string::npos);
    CHECK(message.find("--max-objects-per-uid 4") != std::string::npos);
    CHECK(table.held_by(kAttacker) == 4);
    // Another uid still loads; the attacker may again once it unloads one.
    auto victims = table.add(key_of(kVictim));
    CHECK(table.find(victims, kVictim).owner == kVictim);
    table.erase(1, kAttacker);
    CHECK_NOTHROW(table.add(key_of(kAttacker)));
}

TEST_CASE("sim::ObjectTable the module-wide limit still holds") {
    ObjectTable table(2, {3, 2});
    table.add(key_of(kAttacker));
    table.add(key_of(kAttacker));
    table.add(key_of(kVictim));
    std::string message;
    CHECK(code_of([&] { table.add(key_of(4000)); }, &message) == ErrorCode::limit);
    CHECK(message.find("module 2 holds 3 objects") != std::string::npos);
    CHECK(table.held_by(4000) == 0);
}

TEST_CASE("sim::ObjectTable erase_client removes what one client loaded") {
    constexpr ClientId kSupervisor = 1; // loads the token and a module-protected key
    constexpr ClientId kApp = 2;        // the same uid, another process
    constexpr ClientId kStranger = 3;   // another uid
    ObjectTable table(1, {100, 5});
    auto token = table.add(token_of(kVictim, kSupervisor));
    auto world_key = table.add(key_of(kVictim, 0, kSupervisor));
    auto app_key_under_token = table.add(key_of(kVictim, token, kApp));
    auto app_key = table.add(key_of(kVictim, 0, kApp));
    auto strangers = table.add(token_of(kAttacker, kStranger));
    REQUIRE(table.held_by(kVictim) == 4);
    // Another process of the same uid uses what the supervisor loaded.
    CHECK(table.find(world_key, kVictim).client == kSupervisor);

    auto dropped = table.erase_client(kSupervisor);
    CHECK(dropped.size() == 3); // its token, its key, and the key loaded under its token
    CHECK(code_of([&] { table.find(token, kVictim); }) == ErrorCode::invalid_handle);
    CHECK(code_of([&] { table.find(world_key, kVictim); }) == ErrorCode::invalid_handle);
    CHECK(code_of([&] { table.find(app_key_under_token, kVictim); }) == ErrorCode::invalid_handle);
    CHECK(table.find(app_key, kVictim).client == kApp);
    CHECK(table.find(strangers, kAttacker).client == kStranger);
    CHECK(table.size() == 2);

    SUBCASE("the uid's share is given back") {
        CHECK(table.held_by(kVictim) == 1);
        CHECK(table.held_by(kAttacker) == 1);
        for (int i = 0; i < 4; ++i) {
            CHECK_NOTHROW(table.add(key_of(kVictim, 0, kApp)));
        }
        CHECK(code_of([&] { table.add(key_of(kVictim, 0, kApp)); }) == ErrorCode::limit);
    }
    SUBCASE("a client that loaded nothing, or no client, removes nothing") {
        CHECK(table.erase_client(kSupervisor).empty());
        CHECK(table.erase_client(42).empty());
        table.add(key_of(kVictim));
        CHECK(table.erase_client(kNoClient).empty());
        CHECK(table.size() == 3);
    }
    SUBCASE("handles are never given again") {
        CHECK(table.add(token_of(kVictim, kSupervisor)) > strangers);
    }
}

TEST_CASE("sim::ObjectTable reserves a block of handles before it issues past its reservation") {
    std::vector<hsm::ObjectHandle> asked;
    HandleRange range;
    range.first = 10;
    range.reserved = 12;
    range.reserve = [&](hsm::ObjectHandle below) { asked.push_back(below); };
    ObjectTable table(1, ObjectLimits{}, range);
    auto add = [&] {
        return table.add(
            ObjectTable::Object{0, kNoClient, std::make_shared<TokenObject>(), nullptr});
    };
    CHECK(add() == 10);
    CHECK(add() == 11);
    CHECK(asked.empty());
    CHECK(add() == 12);
    REQUIRE(asked.size() == 1);
    CHECK(asked[0] == 12 + kHandleBlock);

    SUBCASE("a reservation that cannot be made issues nothing") {
        HandleRange failing;
        failing.first = 5;
        failing.reserved = 5;
        failing.reserve = [](hsm::ObjectHandle) { throw Error(ErrorCode::io, "disk full"); };
        ObjectTable full(1, ObjectLimits{}, failing);
        CHECK(code_of([&] {
                  full.add(
                      ObjectTable::Object{0, kNoClient, std::make_shared<TokenObject>(), nullptr});
              }) == ErrorCode::io);
        CHECK(full.size() == 0);
    }
}

TEST_CASE("sim::ObjectTable erase_matching removes what it selects, whoever loaded it, with the "
          "keys under a token it removes") {
    ObjectTable table(1, {});
    auto victims = table.add(token_of(kVictim, 1));
    table.add(key_of(kVictim, victims, 1));
    auto attackers = table.add(token_of(kAttacker, 2));
    table.add(key_of(kAttacker, attackers, 2));
    auto lone = key_of(kAttacker, 0, 3);
    std::const_pointer_cast<KeyObject>(lone.key)->info.ident = "gone";
    table.add(std::move(lone));
    table.add(key_of(kVictim, 0, 3));

    // Every token (both uids' copies of the one token), and one key by ident.
    auto dropped = table.erase_matching([](const ObjectTable::Object& object) {
        return object.token ? object.token->info.name == "t" : object.key->info.ident == "gone";
    });
    CHECK(dropped.size() == 5);
    CHECK(table.size() == 1);
    CHECK(table.held_by(kVictim) == 1);
    CHECK(table.held_by(kAttacker) == 0);
    CHECK(code_of([&] { table.find(victims, kVictim); }) == ErrorCode::invalid_handle);
    CHECK(table.erase_matching([](const ObjectTable::Object&) { return false; }).empty());
}
