#include "preloadrun/common/env.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <string_view>

using preloadrun::getenv_nonempty;

TEST_CASE("common::getenv_nonempty") {
    SUBCASE("a variable that is set") {
        ::setenv("PRELOADRUN_TEST_VARIABLE", "value", 1);
        const char* value = getenv_nonempty("PRELOADRUN_TEST_VARIABLE");
        REQUIRE(value != nullptr);
        CHECK(std::string_view(value) == "value");
    }
    SUBCASE("empty counts as unset") {
        ::setenv("PRELOADRUN_TEST_VARIABLE", "", 1);
        CHECK(getenv_nonempty("PRELOADRUN_TEST_VARIABLE") == nullptr);
    }
    SUBCASE("unset") {
        ::unsetenv("PRELOADRUN_TEST_VARIABLE");
        CHECK(getenv_nonempty("PRELOADRUN_TEST_VARIABLE") == nullptr);
    }
    ::unsetenv("PRELOADRUN_TEST_VARIABLE");
}
