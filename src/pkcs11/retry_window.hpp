#pragma once
// Per-module retry windows for reloads that failed: a module is retried until
// its window (counted from its first failure) has passed, then given up.
// Time comes from a Clock so tests need not wait.

#include "preloadrun/common/clock.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <vector>

namespace preloadrun::pkcs11 {

class RetryWindows {
public:
    RetryWindows(const Clock& clock, std::chrono::milliseconds window)
        : clock_(clock), window_(window) {}

    // A reload onto `module` failed: starts its window if none is open.
    void failed(std::uint32_t module);
    // It succeeded (or a new change restarts it): closes the window.
    void clear(std::uint32_t module) { since_.erase(module); }
    // Modules whose window is still open, to retry now.
    std::vector<std::uint32_t> due() const;
    // Modules whose window has passed (removed from the set).
    std::vector<std::uint32_t> take_expired();
    bool empty() const noexcept { return since_.empty(); }
    std::chrono::milliseconds window() const noexcept { return window_; }

private:
    const Clock& clock_;
    std::chrono::milliseconds window_;
    std::map<std::uint32_t, Clock::time_point> since_;
};

} // namespace preloadrun::pkcs11
