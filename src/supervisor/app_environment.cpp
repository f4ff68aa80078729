#include "app_environment.hpp"

#include "preloadrun/tokens/environment.hpp"

namespace preloadrun::supervisor {

AppEnvironment app_environment(const std::filesystem::path& tokens_file, bool high_availability,
                               const std::string& service_socket) {
    AppEnvironment env;
    namespace names = tokens::env;
    env.set.emplace_back(names::kTokensFile, tokens_file.string());
    env.set.emplace_back(names::kLoadSharing, names::kOn);
    if (high_availability) {
        env.set.emplace_back(names::kReloadKeys, names::kOn);
    } else {
        env.unset.emplace_back(names::kReloadKeys);
    }
    if (!service_socket.empty()) {
        const auto absolute = std::filesystem::absolute(service_socket).string();
        env.set.emplace_back(names::kServiceSocket.name, absolute);
        env.set.emplace_back(names::kServiceSocket.alias, absolute);
    }
    return env;
}

} // namespace preloadrun::supervisor
