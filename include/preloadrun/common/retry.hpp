#pragma once
// Retrying what failed, per target (an HSM module): a target is retried until
// its window, counted from its first failure since it last succeeded or
// changed, has passed; then it is given up. Between attempts, for who waits:
// 100 ms, doubling up to 5 s, never past the end of the window. preloadrun's
// high-availability loop waits those delays; the PKCS#11 module's reloader
// tries again at each operation instead. Time comes from a Clock, so that
// the window is tested without waiting for it.

#include "preloadrun/common/clock.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <vector>

namespace preloadrun {

class RetryWindows {
public:
    static constexpr std::chrono::milliseconds kFirstDelay{100};
    static constexpr std::chrono::milliseconds kMaxDelay{5000};

    RetryWindows(const Clock& clock, std::chrono::milliseconds window)
        : clock_(clock), window_(window) {}

    // An attempt on `target` failed now: opens its window if none is open.
    // Returns the delay before the next attempt, or nullopt once the window
    // has passed: give up (the target stays given up until clear()).
    std::optional<std::chrono::milliseconds> failed(std::uint32_t target);
    // It succeeded, or changed (a clear, a restore): start afresh.
    void clear(std::uint32_t target) { open_.erase(target); }

    // Targets whose window is still open: to try again.
    std::vector<std::uint32_t> due() const;
    // Targets whose window has passed, forgotten here: to give up.
    std::vector<std::uint32_t> take_expired();

    // Failed attempts on `target` since its window opened.
    int failures(std::uint32_t target) const;
    bool empty() const noexcept { return open_.empty(); }
    std::chrono::milliseconds window() const noexcept { return window_; }

private:
    struct Window {
        Clock::time_point first_failure;
        int failures = 0;
    };
    bool passed(const Window& w, Clock::time_point now) const noexcept {
        return now - w.first_failure >= window_;
    }

    const Clock& clock_;
    std::chrono::milliseconds window_;
    std::map<std::uint32_t, Window> open_;
};

} // namespace preloadrun
