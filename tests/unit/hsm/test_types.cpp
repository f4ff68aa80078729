#include "preloadrun/hsm/types.hpp"

#include <doctest/doctest.h>

using namespace preloadrun::hsm;

TEST_CASE("hsm::to_string") {
    SUBCASE("ModuleState") {
        CHECK(to_string(ModuleState::usable) == "usable");
        CHECK(to_string(ModuleState::initialising) == "initialising");
        CHECK(to_string(ModuleState::failed) == "failed");
        CHECK(to_string(ModuleState::removed) == "removed");
    }
    SUBCASE("TokenType") {
        CHECK(to_string(TokenType::softcard) == "softcard");
        CHECK(to_string(TokenType::cardset) == "cardset");
    }
    SUBCASE("KeyType") {
        CHECK(to_string(KeyType::rsa) == "rsa");
        CHECK(to_string(KeyType::ec_p256) == "ec-p256");
        CHECK(to_string(KeyType::ec_p384) == "ec-p384");
        CHECK(to_string(KeyType::aes) == "aes");
    }
}
