#include "preloadrun/common/retry.hpp"

#include <algorithm>

namespace preloadrun {

std::optional<std::chrono::milliseconds> RetryWindows::failed(std::uint32_t target) {
    const auto now = clock_.now();
    auto& w = open_.try_emplace(target, Window{now, 0}).first->second;
    ++w.failures;
    if (passed(w, now)) {
        return std::nullopt;
    }
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(now - w.first_failure);
    auto delay = kFirstDelay;
    for (int i = 1; i < w.failures && delay < kMaxDelay; ++i) {
        delay *= 2;
    }
    return std::min({delay, kMaxDelay, window_ - elapsed});
}

std::vector<std::uint32_t> RetryWindows::due() const {
    std::vector<std::uint32_t> out;
    const auto now = clock_.now();
    for (const auto& [target, w] : open_) {
        if (!passed(w, now)) {
            out.push_back(target);
        }
    }
    return out;
}

std::vector<std::uint32_t> RetryWindows::take_expired() {
    std::vector<std::uint32_t> out;
    const auto now = clock_.now();
    for (auto it = open_.begin(); it != open_.end();) {
        if (passed(it->second, now)) {
            out.push_back(it->first);
            it = open_.erase(it);
        } else {
            ++it;
        }
    }
    return out;
}

int RetryWindows::failures(std::uint32_t target) const {
    const auto it = open_.find(target);
    return it == open_.end() ? 0 : it->second.failures;
}

} // namespace preloadrun
