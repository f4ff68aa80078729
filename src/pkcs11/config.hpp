#pragma once
// The module's settings, read from the environment at C_Initialize.

#include "preloadrun/hsm/service.hpp"

#include <chrono>
#include <filesystem>
#include <optional>

namespace preloadrun::pkcs11 {

struct Config {
    bool load_sharing = false; // CKNFAST_LOADSHARING (or implied by reload_keys)
    bool reload_keys = false;  // CKNFAST_RELOAD_KEYS
    std::optional<std::filesystem::path> tokens_file; // NFAST_NFKM_TOKENSFILE
    // How long a failed reload onto a module is retried before it is abandoned
    // (PRELOADRUN_PKCS11_RETRY_WINDOW: 30s, 5m..., or a bare number of ms;
    // default 5 minutes).
    std::chrono::milliseconds retry_window{std::chrono::minutes(5)};
    // How long an operation waits for a restarting HSM service before it
    // fails (PRELOADRUN_PKCS11_SERVICE_WAIT, a duration as above; 0: not at all). Only with
    // key reloading, where modules come back.
    std::chrono::milliseconds service_wait{5000};
    hsm::Endpoint endpoint;

    static Config from_environment();
};

// nShield's convention: set and not "0" (empty counts as unset).
bool env_flag(const char* name);

} // namespace preloadrun::pkcs11
