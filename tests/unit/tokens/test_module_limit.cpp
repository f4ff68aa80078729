#include "preloadrun/tokens/module_limit.hpp"

#include <doctest/doctest.h>

using namespace preloadrun::tokens;
using Verdict = ModuleLimit::Verdict;

TEST_CASE("tokens::ModuleLimit admits at most 32 modules, and those it refused it says so once") {
    ModuleLimit limit;
    for (std::uint32_t n = 1; n <= kMaxModules; ++n) {
        REQUIRE(limit.admit(n) == Verdict::admitted);
    }
    CHECK(limit.size() == kMaxModules);

    SUBCASE("a module already tracked stays, whatever became of it") {
        CHECK(limit.admit(7) == Verdict::tracked);
        CHECK(ModuleLimit::ok(limit.admit(32)));
    }
    SUBCASE("the 33rd is refused: the first time, then again") {
        CHECK(limit.admit(33) == Verdict::refused);
        CHECK(limit.admit(33) == Verdict::refused_again);
        CHECK(limit.admit(40) == Verdict::refused);
        CHECK_FALSE(ModuleLimit::ok(Verdict::refused));
        CHECK_FALSE(ModuleLimit::ok(Verdict::refused_again));
        CHECK_FALSE(limit.tracks(33));
        CHECK(limit.size() == kMaxModules);
    }
}

TEST_CASE("tokens::ModuleLimit tracks numbers, not how many there are now") {
    ModuleLimit limit;
    CHECK(limit.admit(100) == Verdict::admitted);
    CHECK(limit.tracks(100));
    CHECK_FALSE(limit.tracks(1));
}
