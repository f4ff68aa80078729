#include "supervisor/retry.hpp"

#include <algorithm>

namespace preloadrun::supervisor {

std::optional<std::chrono::milliseconds> RetryState::failed(Clock::time_point now) {
    if (!first_failure_) {
        first_failure_ = now;
    }
    ++failures_;
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - *first_failure_);
    if (elapsed >= window_) {
        gave_up_ = true;
        return std::nullopt;
    }
    // 100 ms, 200 ms, 400 ms, ... up to 5 s; never past the end of the window.
    auto delay = kFirstDelay;
    for (int i = 1; i < failures_ && delay < kMaxDelay; ++i) {
        delay *= 2;
    }
    delay = std::min({delay, kMaxDelay, window_ - elapsed});
    return delay;
}

void RetryState::reset() noexcept {
    first_failure_.reset();
    failures_ = 0;
    gave_up_ = false;
}

} // namespace preloadrun::supervisor
