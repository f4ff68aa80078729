#include "preloadrun/common/process.hpp"

#include <doctest/doctest.h>
#include <string>
#include <unistd.h>

using namespace preloadrun;

TEST_CASE("common::proc_stat_start_time") {
    const std::string rest = " S 1 4242 4242 0 -1 4194560 112 0 0 0 0 0 0 0 20 0 1 0 2477617 "
                             "5791744 274 18446744073709551615 1 1 0 0 0 0 0 4096 0\n";
    SUBCASE("whatever the command name holds") {
        for (const std::string comm : {"sh", "", "a b", ")", "a) (b", ") S 1 2 3 4 5 6 7 8 9 ",
                                       "x\ny", "(((", "1 2 3) 4 5 6"}) {
            CAPTURE(comm);
            CHECK(proc_stat_start_time("4242 (" + comm + ")" + rest) == 2477617);
        }
    }
    SUBCASE("no start time") {
        CHECK_FALSE(proc_stat_start_time("").has_value());
        CHECK_FALSE(proc_stat_start_time("4242 (sh S 1 2").has_value());
        CHECK_FALSE(proc_stat_start_time("4242 (sh) S 1 2 3").has_value());
        CHECK_FALSE(
            proc_stat_start_time("4242 (sh) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5 1")
                .has_value());
        CHECK_FALSE(
            proc_stat_start_time("4242 (sh) S 1 4242 4242 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 12x 1")
                .has_value());
    }
    SUBCASE("this process") {
        CHECK(process_start_time(::getpid()).has_value());
        CHECK(self_identity().start_time == *process_start_time(::getpid()));
    }
}
