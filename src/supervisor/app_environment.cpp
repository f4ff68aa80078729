#include "supervisor/app_environment.hpp"

namespace preloadrun::supervisor {

AppEnvironment app_environment(const std::filesystem::path& tokens_file, bool high_availability,
                               const std::string& service_socket) {
    AppEnvironment env;
    env.set.emplace_back("NFAST_NFKM_TOKENSFILE", tokens_file.string());
    env.set.emplace_back("CKNFAST_LOADSHARING", "1");
    if (high_availability) {
        env.set.emplace_back("CKNFAST_RELOAD_KEYS", "1");
    } else {
        env.unset.emplace_back("CKNFAST_RELOAD_KEYS");
    }
    if (!service_socket.empty()) {
        env.set.emplace_back("HSMSIM_SOCKET", std::filesystem::absolute(service_socket).string());
    }
    return env;
}

} // namespace preloadrun::supervisor
