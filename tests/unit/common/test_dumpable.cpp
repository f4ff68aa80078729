#include "preloadrun/common/dumpable.hpp"

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

// In a child process: the test runner itself stays dumpable (for debuggers
// and sanitizers).
TEST_CASE("common::make_undumpable") {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        const bool before = preloadrun::is_dumpable();
        preloadrun::make_undumpable();
        const bool after = preloadrun::is_dumpable();
        ::_exit(before && !after ? 0 : 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}
