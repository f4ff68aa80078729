#include "pkcs11/retry_window.hpp"
#include "support/fake_clock.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::pkcs11;
using namespace std::chrono_literals;

namespace {
using testsupport::FakeClock;

} // namespace

TEST_CASE("pkcs11::RetryWindows") {
    FakeClock clock;
    RetryWindows windows(clock, 5min);
    REQUIRE(windows.empty());

    SUBCASE("a failed module is retried within its window, then expires") {
        windows.failed(2);
        CHECK(windows.due() == std::vector<std::uint32_t>{2});
        clock.advance(4min);
        windows.failed(2); // a later failure does not restart the window
        CHECK(windows.take_expired().empty());
        clock.advance(1min + 1ms);
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
    SUBCASE("windows are per module") {
        windows.failed(1);
        clock.advance(3min);
        windows.failed(2);
        clock.advance(3min);
        CHECK(windows.take_expired() == std::vector<std::uint32_t>{1});
        CHECK(windows.due() == std::vector<std::uint32_t>{2});
    }
}
