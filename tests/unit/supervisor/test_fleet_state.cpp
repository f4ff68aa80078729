#include "fleet_state.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::supervisor;

namespace {

hsm::ModuleInfo module(std::uint32_t n, hsm::ModuleState state, std::uint64_t generation) {
    hsm::ModuleInfo m;
    m.number = n;
    m.esn = "ESN-" + std::to_string(n);
    m.state = state;
    m.generation = generation;
    return m;
}

FleetState two_tokens() {
    return FleetState(Bytes(20, 0xab),
                      {{hsm::TokenType::softcard, "a", Bytes(20, 1)},
                       {hsm::TokenType::cardset, "b", Bytes(20, 2)}},
                      true);
}

tokens::Owner owner() {
    return {self_identity(), "00112233445566778899aabbccddeeff"};
}

} // namespace

TEST_CASE("supervisor::FleetState renders what is loaded where") {
    auto fleet = two_tokens();
    fleet.update_module(module(1, hsm::ModuleState::usable, 0));
    fleet.update_module(module(2, hsm::ModuleState::usable, 4));
    fleet.set_loaded(1, {{0, 11}, {1, 12}}, 1000);
    fleet.set_loaded(2, {{0, 21}, {1, 22}}, 2000);
    auto file = fleet.render(owner());
    REQUIRE(file.tokens.size() == 2);
    CHECK(file.tokens[0].type == tokens::TokenType::softcard);
    CHECK(file.tokens[1].type == tokens::TokenType::cardset);
    CHECK(file.tokens[0].hash == to_hex(Bytes(20, 1)));
    REQUIRE(file.tokens[0].loaded.size() == 2);
    CHECK(file.tokens[0].loaded[1].module == 2);
    CHECK(file.tokens[0].loaded[1].module_generation == 4);
    CHECK(file.tokens[0].loaded[1].handle == 21);
    CHECK(file.world == to_hex(Bytes(20, 0xab)));
    REQUIRE(file.modules.size() == 2);
    CHECK(file.modules[1].reloads == 1);
    CHECK(file.modules[1].last_reload_ms == 2000);
    CHECK(file.high_availability);

    SUBCASE("a clear (new generation) drops the module's handles") {
        fleet.update_module(module(2, hsm::ModuleState::initialising, 5));
        auto after = fleet.render(owner());
        CHECK(after.tokens[0].loaded.size() == 1);
        CHECK(after.modules[1].state == tokens::ModuleState::initialising);
        CHECK(after.modules[1].generation == 5);
        CHECK_FALSE(fleet.modules().at(2).loaded);
        CHECK_FALSE(fleet.handle(2, 0).has_value());
        fleet.update_module(module(2, hsm::ModuleState::usable, 5));
        fleet.set_loaded(2, {{0, 31}, {1, 32}}, 3000);
        auto back = fleet.render(owner());
        CHECK(back.tokens[0].loaded[1].handle == 31);
        CHECK(back.modules[1].reloads == 2);
    }
    SUBCASE("a failure drops the handles even without a new generation") {
        fleet.update_module(module(1, hsm::ModuleState::failed, 0));
        CHECK(fleet.render(owner()).tokens[0].loaded.size() == 1);
        CHECK_FALSE(fleet.modules().at(1).loaded);
    }
    SUBCASE("given up is shown and cleared by a load") {
        fleet.set_given_up(2, true);
        CHECK(fleet.render(owner()).modules[1].given_up);
        fleet.set_loaded(2, {{0, 41}, {1, 42}}, 4000);
        CHECK_FALSE(fleet.render(owner()).modules[1].given_up);
    }
    SUBCASE("forget_handles, for a restarted HSM service") {
        fleet.forget_handles(1);
        CHECK_FALSE(fleet.modules().at(1).loaded);
        CHECK(fleet.render(owner()).tokens[0].loaded.size() == 1);
    }
}

TEST_CASE("supervisor::FleetState tracks at most 32 modules, failed and removed ones included") {
    FleetState fleet(Bytes(20, 1), {}, true);
    for (std::uint32_t n = 1; n <= 32; ++n) {
        auto m = module(n, n % 2 == 0 ? hsm::ModuleState::removed : hsm::ModuleState::usable, 0);
        REQUIRE(fleet.admit(m));
        fleet.update_module(m);
    }
    CHECK_FALSE(fleet.admit(module(33, hsm::ModuleState::usable, 0)));
    CHECK_FALSE(fleet.admit(module(34, hsm::ModuleState::usable, 0)));
    CHECK(fleet.admit(module(2, hsm::ModuleState::usable, 1))); // known modules stay
    CHECK(fleet.modules().size() == 32);
}

TEST_CASE("supervisor::FleetState with no token still lists the modules") {
    FleetState fleet(Bytes(20, 1), {}, false);
    fleet.update_module(module(1, hsm::ModuleState::usable, 3));
    fleet.set_loaded(1, {}, 5);
    auto file = fleet.render(owner());
    CHECK(file.tokens.empty());
    REQUIRE(file.modules.size() == 1);
    CHECK(file.modules[0].generation == 3);
    CHECK_FALSE(file.high_availability);
}
