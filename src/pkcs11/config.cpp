#include "config.hpp"

#include "log.hpp"
#include "preloadrun/common/duration.hpp"
#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/tokens/environment.hpp"

namespace preloadrun::pkcs11 {

bool env_flag(const char* name) {
    return tokens::env::flag_on(getenv_nonempty(name));
}

namespace {

// A duration from the environment: a number and its unit (30s, 5m), or a
// bare number of milliseconds as these variables always took. Anything else
// is logged and leaves the default.
void read_duration(const char* name, std::chrono::milliseconds& value) {
    const char* text = getenv_nonempty(name);
    if (text == nullptr) {
        return;
    }
    try {
        value = parse_duration(text, BareNumber::milliseconds);
    } catch (const Error& e) {
        logger().warn("{}: {}; using {} ms", name, e.what(), value.count());
    }
}

} // namespace

Config Config::from_environment() {
    Config config;
    config.reload_keys = env_flag(tokens::env::kReloadKeys);
    config.load_sharing = env_flag(tokens::env::kLoadSharing) || config.reload_keys;
    if (const char* path = getenv_nonempty(tokens::env::kTokensFile)) {
        config.tokens_file = std::filesystem::path(path);
    }
    read_duration("PRELOADRUN_PKCS11_RETRY_WINDOW", config.retry_window);
    read_duration("PRELOADRUN_PKCS11_SERVICE_WAIT", config.service_wait);
    config.endpoint = hsm::default_endpoint();
    config.endpoint.client_name = "preloadrun-pkcs11";
    return config;
}

} // namespace preloadrun::pkcs11
