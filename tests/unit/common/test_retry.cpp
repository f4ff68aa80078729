#include "preloadrun/common/retry.hpp"
#include "support/fake_clock.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace std::chrono_literals;
using testsupport::FakeClock;

TEST_CASE("RetryWindows: delays between attempts") {
    FakeClock clock;
    clock.advance(1h); // time points are not zero-based
    SUBCASE("back off from 100 ms, doubling, up to 5 s") {
        RetryWindows retry(clock, 10min);
        CHECK(retry.failed(1) == 100ms);
        clock.advance(100ms);
        CHECK(retry.failed(1) == 200ms);
        clock.advance(200ms);
        CHECK(retry.failed(1) == 400ms);
        clock.advance(400ms);
        CHECK(retry.failed(1) == 800ms);
        clock.advance(1300ms);
        for (int i = 0; i < 10; ++i) {
            retry.failed(1);
        }
        clock.advance(1s);
        CHECK(retry.failed(1) == 5000ms);
        CHECK(retry.failures(1) == 15);
    }
    SUBCASE("give up once the window since the first failure has passed") {
        RetryWindows retry(clock, 5min);
        REQUIRE(retry.failed(2));
        clock.advance(4min + 59s);
        CHECK(retry.failed(2).has_value());
        clock.advance(1s);
        CHECK_FALSE(retry.failed(2).has_value());
        CHECK_FALSE(retry.failed(2).has_value()); // given up until cleared
        CHECK(retry.failures(2) == 4);
    }
    SUBCASE("the last attempt is at the end of the window, not past it") {
        RetryWindows retry(clock, 250ms);
        CHECK(retry.failed(3) == 100ms);
        clock.advance(100ms);
        CHECK(retry.failed(3) == 150ms); // 200 ms would overshoot the window
        clock.advance(150ms);
        CHECK_FALSE(retry.failed(3).has_value());
    }
    SUBCASE("clear starts a new window") {
        RetryWindows retry(clock, 1s);
        retry.failed(4);
        clock.advance(2s);
        CHECK_FALSE(retry.failed(4).has_value());
        retry.clear(4);
        CHECK(retry.failures(4) == 0);
        clock.advance(10s);
        CHECK(retry.failed(4) == 100ms);
    }
}

TEST_CASE("RetryWindows: which targets to try again, which to give up") {
    FakeClock clock;
    RetryWindows windows(clock, 5min);
    REQUIRE(windows.empty());

    SUBCASE("a failed target is due within its window, then expires") {
        windows.failed(2);
        CHECK(windows.due() == std::vector<std::uint32_t>{2});
        clock.advance(4min);
        windows.failed(2); // a later failure does not restart the window
        CHECK(windows.take_expired().empty());
        clock.advance(1min);
        CHECK(windows.due().empty());
        CHECK(windows.take_expired() == std::vector<std::uint32_t>{2});
        CHECK(windows.empty());
    }
    SUBCASE("success closes the window") {
        windows.failed(3);
        windows.clear(3);
        clock.advance(10min);
        CHECK(windows.take_expired().empty());
        CHECK(windows.empty());
    }
    SUBCASE("windows are per target") {
        windows.failed(1);
        clock.advance(3min);
        windows.failed(2);
        clock.advance(3min);
        CHECK(windows.take_expired() == std::vector<std::uint32_t>{1});
        CHECK(windows.due() == std::vector<std::uint32_t>{2});
    }
}
