#pragma once
// When to try loading onto a module again, and when to give up on it: pure
// arithmetic on time points, so that the retry window is tested without
// waiting for it.

#include <chrono>
#include <optional>

namespace preloadrun::supervisor {

class RetryState {
public:
    using Clock = std::chrono::steady_clock;

    explicit RetryState(std::chrono::milliseconds window) : window_(window) {}

    // Records a failed attempt at `now`. Returns the delay before the next
    // attempt, or nullopt when the window (counted from the first failure)
    // has passed: give up.
    std::optional<std::chrono::milliseconds> failed(Clock::time_point now);
    // A success, or a change of the module (clear, restore): start afresh.
    void reset() noexcept;

    int failures() const noexcept { return failures_; }
    bool gave_up() const noexcept { return gave_up_; }

    static constexpr std::chrono::milliseconds kFirstDelay{100};
    static constexpr std::chrono::milliseconds kMaxDelay{5000};

private:
    std::chrono::milliseconds window_;
    std::optional<Clock::time_point> first_failure_;
    int failures_ = 0;
    bool gave_up_ = false;
};

} // namespace preloadrun::supervisor
