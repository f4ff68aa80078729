#include "pkcs11/retry_window.hpp"

namespace preloadrun::pkcs11 {

void RetryWindows::failed(std::uint32_t module) {
    since_.try_emplace(module, clock_.now());
}

std::vector<std::uint32_t> RetryWindows::due() const {
    std::vector<std::uint32_t> out;
    const auto now = clock_.now();
    for (const auto& [module, since] : since_) {
        if (now - since <= window_) {
            out.push_back(module);
        }
    }
    return out;
}

std::vector<std::uint32_t> RetryWindows::take_expired() {
    std::vector<std::uint32_t> out;
    const auto now = clock_.now();
    for (auto it = since_.begin(); it != since_.end();) {
        if (now - it->second > window_) {
            out.push_back(it->first);
            it = since_.erase(it);
        } else {
            ++it;
        }
    }
    return out;
}

} // namespace preloadrun::pkcs11
