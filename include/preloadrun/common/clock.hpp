#pragma once
// Time behind an interface, so that retry windows and delays can be tested
// without waiting for them.

#include <chrono>

namespace preloadrun {

class Clock {
public:
    using time_point = std::chrono::steady_clock::time_point;
    using duration = time_point::duration;
    virtual ~Clock() = default;
    virtual time_point now() const = 0;
};

class SteadyClock final : public Clock {
public:
    time_point now() const override { return std::chrono::steady_clock::now(); }
};

// The process-wide real clock.
const Clock& steady_clock();

} // namespace preloadrun
