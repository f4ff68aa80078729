#include "preloadrun/hsm/service.hpp"

namespace preloadrun::hsm {

std::vector<KeyLoadResult> Service::load_keys(std::uint32_t module,
                                              const std::vector<KeyToLoad>& keys) {
    std::vector<KeyLoadResult> out;
    out.reserve(keys.size());
    for (const auto& key : keys) {
        KeyLoadResult result;
        try {
            result.handle = load_key(module, key.ident, key.token_handle);
        } catch (const Error& e) {
            if (e.retry() == Retry::connection || e.retry() == Retry::protocol) {
                throw; // the connection, not this key
            }
            result.error = e;
        }
        out.push_back(std::move(result));
    }
    return out;
}

} // namespace preloadrun::hsm
