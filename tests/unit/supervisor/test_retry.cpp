#include "supervisor/retry.hpp"

#include <doctest/doctest.h>

using namespace preloadrun::supervisor;
using namespace std::chrono_literals;

TEST_CASE("supervisor::RetryState") {
    RetryState::Clock::time_point t0{};
    SUBCASE("backs off from 100 ms, doubling, up to 5 s") {
        RetryState retry(10min);
        CHECK(retry.failed(t0) == 100ms);
        CHECK(retry.failed(t0 + 100ms) == 200ms);
        CHECK(retry.failed(t0 + 300ms) == 400ms);
        CHECK(retry.failed(t0 + 700ms) == 800ms);
        for (int i = 0; i < 10; ++i) {
            retry.failed(t0 + 2s);
        }
        CHECK(retry.failed(t0 + 3s) == 5000ms);
        CHECK_FALSE(retry.gave_up());
    }
    SUBCASE("gives up once the window since the first failure has passed") {
        RetryState retry(5min);
        REQUIRE(retry.failed(t0 + 1h));
        CHECK(retry.failed(t0 + 1h + 4min + 59s).has_value());
        CHECK_FALSE(retry.failed(t0 + 1h + 5min).has_value());
        CHECK(retry.gave_up());
        CHECK(retry.failures() == 3);
    }
    SUBCASE("the last attempt is at the end of the window, not past it") {
        RetryState retry(250ms);
        CHECK(retry.failed(t0) == 100ms);
        CHECK(retry.failed(t0 + 100ms) == 150ms); // 200 ms would overshoot the window
        CHECK_FALSE(retry.failed(t0 + 250ms).has_value());
    }
    SUBCASE("reset starts a new window") {
        RetryState retry(1s);
        retry.failed(t0);
        CHECK_FALSE(retry.failed(t0 + 2s).has_value());
        retry.reset();
        CHECK_FALSE(retry.gave_up());
        CHECK(retry.failed(t0 + 10s) == 100ms);
    }
}
