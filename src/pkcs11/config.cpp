#include "pkcs11/config.hpp"

#include "pkcs11/log.hpp"
#include "preloadrun/common/env.hpp"

#include <charconv>
#include <string_view>

namespace preloadrun::pkcs11 {

bool env_flag(const char* name) {
    const char* value = getenv_nonempty(name);
    return value != nullptr && std::string_view(value) != "0";
}

namespace {

// A number of milliseconds from the environment; anything else is logged and
// leaves the default.
void read_milliseconds(const char* name, std::chrono::milliseconds& value) {
    const char* text = getenv_nonempty(name);
    if (text == nullptr) {
        return;
    }
    const std::string_view view(text);
    long long ms = 0;
    const auto [end, ec] = std::from_chars(view.data(), view.data() + view.size(), ms);
    if (ec == std::errc() && end == view.data() + view.size() && ms >= 0) {
        value = std::chrono::milliseconds(ms);
    } else {
        logger().warn("{}='{}' is not a number of milliseconds; using {} ms", name, text,
                      value.count());
    }
}

} // namespace

Config Config::from_environment() {
    Config config;
    config.reload_keys = env_flag("CKNFAST_RELOAD_KEYS");
    config.load_sharing = env_flag("CKNFAST_LOADSHARING") || config.reload_keys;
    if (const char* path = getenv_nonempty("NFAST_NFKM_TOKENSFILE")) {
        config.tokens_file = std::filesystem::path(path);
    }
    read_milliseconds("PRELOADRUN_PKCS11_RETRY_WINDOW", config.retry_window);
    read_milliseconds("PRELOADRUN_PKCS11_SERVICE_WAIT", config.service_wait);
    config.endpoint = hsm::default_endpoint();
    config.endpoint.client_name = "preloadrun-pkcs11";
    return config;
}

} // namespace preloadrun::pkcs11
