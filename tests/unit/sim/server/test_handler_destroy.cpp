// The handler's DestroyKey and DestroyToken: the destroyer
// (sim/model/destroyer.hpp) and the rights it checks, through the wire.

#include "handler_test_util.hpp"

#include <doctest/doctest.h>

using namespace handlertest;

TEST_CASE("sim::Handler DestroyKey of a token-protected key needs that token, loaded by the "
          "caller") {
    Setup s;
    As victim{s, kVictim};
    As attacker{s, kAttacker};
    const auto victim_card = victim.create_token("victim", "victim-pw");
    const auto victim_handle = victim.load_token(1, victim_card, "victim-pw");
    const auto key = victim.generate(victim_handle);
    const auto attacker_card = attacker.create_token("attacker", "attacker-pw");
    const auto attacker_handle = attacker.load_token(1, attacker_card, "attacker-pw");
    REQUIRE(key_exists(s, key));

    SUBCASE("without a token handle: refused, whoever asks") {
        for (const auto& peer : {kAttacker, kRoot, kService, kVictim}) {
            auto refused = As{s, peer}.destroy(key);
            CHECK(error_of(refused) == wire::ERROR_PERMISSION);
            CHECK(refused.error().message().find("loaded") != std::string::npos);
        }
    }
    SUBCASE("with the victim's handle, as another uid: refused") {
        CHECK(error_of(attacker.destroy(key, 1, victim_handle)) == wire::ERROR_PERMISSION);
        CHECK(error_of(As{s, kRoot}.destroy(key, 1, victim_handle)) == wire::ERROR_PERMISSION);
    }
    SUBCASE("with the caller's own handle of another token: refused") {
        auto refused = attacker.destroy(key, 1, attacker_handle);
        CHECK(error_of(refused) == wire::ERROR_PERMISSION);
        CHECK(refused.error().message().find(
                  to_hex(Bytes(victim_card.begin(), victim_card.end()))) != std::string::npos);
    }
    SUBCASE("with a handle that does not exist, or on a module that does not") {
        CHECK(error_of(attacker.destroy(key, 1, 999)) == wire::ERROR_INVALID_HANDLE);
        CHECK(error_of(attacker.destroy(key, 7, attacker_handle)) == wire::ERROR_NOT_FOUND);
    }
    SUBCASE("with the handle on another module than the one named: refused") {
        CHECK(error_of(victim.destroy(key, 2, victim_handle)) == wire::ERROR_INVALID_HANDLE);
    }
    SUBCASE("the owner with the token loaded destroys it") {
        CHECK(victim.destroy(key, 1, victim_handle).has_ok());
        CHECK_FALSE(key_exists(s, key));
        CHECK(error_of(victim.destroy(key, 1, victim_handle)) == wire::ERROR_NOT_FOUND);
        return;
    }
    CHECK(key_exists(s, key));
}

TEST_CASE("sim::Handler DestroyKey of a module-protected key: the world's managers and its "
          "creator") {
    Setup s;
    As victim{s, kVictim};
    As attacker{s, kAttacker};

    SUBCASE("another uid is refused, saying who may") {
        const auto key = victim.generate(0);
        auto refused = attacker.destroy(key);
        CHECK(error_of(refused) == wire::ERROR_PERMISSION);
        CHECK(refused.error().message().find("creator, uid 2000") != std::string::npos);
        CHECK(key_exists(s, key));
    }
    SUBCASE("the creator may") {
        const auto key = victim.generate(0);
        CHECK(victim.destroy(key).has_ok());
        CHECK_FALSE(key_exists(s, key));
    }
    SUBCASE("root and the service's uid may") {
        for (const auto& peer : {kRoot, kService}) {
            const auto key = attacker.generate(0);
            CHECK(As{s, peer}.destroy(key).has_ok());
            CHECK_FALSE(key_exists(s, key));
        }
    }
    SUBCASE("a key without a recorded creator: root and the service's uid only") {
        KeyRecord old;
        old.ident = new_ident();
        s.world->store_key(old, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
        auto refused = victim.destroy(old.ident);
        CHECK(error_of(refused) == wire::ERROR_PERMISSION);
        CHECK(refused.error().message().find("not recorded") != std::string::npos);
        CHECK(As{s, kService}.destroy(old.ident).has_ok());
    }
    SUBCASE("a token handle for a module-protected key is a bad request") {
        const auto key = victim.generate(0);
        CHECK(error_of(victim.destroy(key, 1, 5)) == wire::ERROR_BAD_REQUEST);
        CHECK(key_exists(s, key));
    }
}

TEST_CASE("sim::Handler DestroyToken needs that token, loaded by the caller, and unloads what "
          "came from it") {
    Setup s;
    As victim{s, kVictim};
    As attacker{s, kAttacker};
    const auto card = victim.create_token("victim", "victim-pw");
    const auto on_1 = victim.load_token(1, card, "victim-pw");
    const auto on_2 = victim.load_token(2, card, "victim-pw");
    const auto key = victim.generate(on_1);
    const auto key_on_2 = victim.load_key(2, key, on_2).handle().handle();
    // Another uid that knows the passphrase has it loaded too.
    const auto theirs = attacker.load_token(2, card, "victim-pw");
    const auto attacker_card = attacker.create_token("attacker", "attacker-pw");
    const auto attacker_handle = attacker.load_token(1, attacker_card, "attacker-pw");
    auto card_exists = [&] {
        return std::filesystem::exists(s.tmp / ("card_" + to_hex(Bytes(card.begin(), card.end()))));
    };

    SUBCASE("without the token loaded: refused, whoever asks") {
        for (const auto& peer : {kAttacker, kRoot, kService, kVictim}) {
            auto refused = As{s, peer}.destroy_token(card, 1, 0, true);
            CHECK(error_of(refused) == wire::ERROR_PERMISSION);
            CHECK(refused.error().message().find("loaded") != std::string::npos);
        }
        CHECK(error_of(attacker.destroy_token(card, 1, attacker_handle, true)) ==
              wire::ERROR_PERMISSION);
        CHECK(error_of(attacker.destroy_token(card, 1, on_1, true)) == wire::ERROR_PERMISSION);
        CHECK(error_of(victim.destroy_token(std::string(20, 'x'), 1, on_1, true)) ==
              wire::ERROR_NOT_FOUND);
        CHECK(card_exists());
    }
    SUBCASE("refused while it protects keys, unless with them") {
        auto refused = victim.destroy_token(card, 1, on_1);
        CHECK(error_of(refused) == wire::ERROR_CONFLICT);
        CHECK(card_exists());
        CHECK(key_exists(s, key));
        CHECK(victim.sign(2, key_on_2).has_data());

        REQUIRE(victim.destroy_token(card, 1, on_1, true).has_ok());
        CHECK_FALSE(card_exists());
        CHECK_FALSE(key_exists(s, key));
        // Every object loaded from it is gone, whoever loaded it; the rest stays.
        CHECK(error_of(victim.sign(2, key_on_2)) == wire::ERROR_INVALID_HANDLE);
        CHECK(s.fleet->info(1).objects == 1); // the attacker's own token
        CHECK(s.fleet->info(2).objects == 0);
        CHECK(error_of(As{s, kAttacker}.destroy_token(card, 2, theirs, true)) ==
              wire::ERROR_NOT_FOUND);
    }
    SUBCASE("another uid that loaded it with its passphrase may") {
        CHECK(attacker.destroy_token(card, 2, theirs, true).has_ok());
        CHECK_FALSE(card_exists());
    }
}

TEST_CASE("sim::Handler DestroyKey unloads the key from every module, whoever loaded it") {
    Setup s;
    As victim{s, kVictim};
    As attacker{s, kAttacker};
    const auto key = victim.generate(0);
    const auto mine = victim.load_key(2, key).handle().handle();
    const auto theirs = attacker.load_key(1, key).handle().handle();
    REQUIRE(attacker.sign(1, theirs).has_data());
    REQUIRE(victim.destroy(key).has_ok());
    CHECK(error_of(attacker.sign(1, theirs)) == wire::ERROR_INVALID_HANDLE);
    CHECK(error_of(victim.sign(2, mine)) == wire::ERROR_INVALID_HANDLE);
    // The object that generating it left on module 1 goes too.
    CHECK(s.fleet->info(1).objects == 0);
    CHECK(s.fleet->info(2).objects == 0);
}
