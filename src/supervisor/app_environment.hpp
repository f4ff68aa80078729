#pragma once
// The environment an application needs to use what preloadrun loaded: where
// the tokens file is, whether keys are reloaded, and which HSM service to
// talk to. preloadrun's child gets it; service mode prints it as shell lines.

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace preloadrun::supervisor {

struct AppEnvironment {
    std::vector<std::pair<std::string, std::string>> set; // in this order
    std::vector<std::string> unset;
};

// The variables of tokens/environment.hpp: the tokens file, load-sharing,
// key reloading (set with high availability, unset without), and the service
// socket when `service_socket` is not empty (made absolute): the
// application's PKCS#11 module must talk to the service preloadrun loaded
// the tokens on, not to whatever its own default or a stale variable names.
AppEnvironment app_environment(const std::filesystem::path& tokens_file, bool high_availability,
                               const std::string& service_socket);

} // namespace preloadrun::supervisor
