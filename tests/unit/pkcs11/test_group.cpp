#include "group.hpp"

#include <doctest/doctest.h>

using namespace preloadrun::pkcs11;

TEST_CASE("pkcs11::Group") {
    Group group;
    REQUIRE(group.track(1, "A", 0));
    REQUIRE(group.track(2, "B", 0));
    CHECK(group.members().empty());

    SUBCASE("join and leave") {
        group.join(1, "test");
        group.join(2, "test");
        CHECK(group.members() == std::vector<std::uint32_t>{1, 2});
        CHECK(group.leave(1, "cleared"));
        CHECK_FALSE(group.leave(1, "again")); // reported once
        CHECK(group.members() == std::vector<std::uint32_t>{2});
        CHECK_FALSE(group.is_member(1));
    }
    SUBCASE("at most 32 modules, counting ones that left") {
        for (std::uint32_t n = 3; n <= 32; ++n) {
            REQUIRE(group.track(n, "X", 0));
        }
        group.join(5, "test");
        group.leave(5, "removed");
        CHECK_FALSE(group.track(33, "Y", 0));
        CHECK(group.track(5, "X", 0)); // already tracked
        CHECK(group.records().size() == 32);
    }
    SUBCASE("abandoned modules are out") {
        group.join(2, "test");
        group.abandon(2, "retry window passed");
        CHECK_FALSE(group.is_member(2));
        CHECK(group.record(2)->abandoned);
        group.join(2, "tokens file changed");
        CHECK(group.is_member(2));
        CHECK_FALSE(group.record(2)->abandoned);
    }
    SUBCASE("round-robin turns advance") {
        const auto a = group.next_turn();
        CHECK(group.next_turn() == a + 1);
    }
}
