#pragma once
// A clock that moves only when a test says so, for code that takes a
// preloadrun::Clock (retry windows, rate limits, fair shares). Safe to read
// and advance from several threads.

#include "preloadrun/common/clock.hpp"

#include <atomic>
#include <chrono>

namespace testsupport {

class FakeClock final : public preloadrun::Clock {
public:
    time_point now() const override { return time_point(std::chrono::nanoseconds(ns_.load())); }
    void advance(std::chrono::nanoseconds d) { ns_ += d.count(); }

private:
    std::atomic<std::chrono::nanoseconds::rep> ns_{0};
};

} // namespace testsupport
