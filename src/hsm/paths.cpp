#include "preloadrun/common/env.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <cstdlib>
#include <string>
#include <unistd.h>

namespace preloadrun::hsm {

namespace {

std::string env(const char* name) {
    const char* value = getenv_nonempty(name);
    return value != nullptr ? std::string(value) : std::string();
}

// $XDG_RUNTIME_DIR/hsmsim, else /tmp/hsmsim-<euid>.
std::string default_socket_dir() {
    if (const std::string runtime = env("XDG_RUNTIME_DIR"); !runtime.empty()) {
        return runtime + "/hsmsim";
    }
    return "/tmp/hsmsim-" + std::to_string(::geteuid());
}

std::string socket_path(const char* variable, const char* file_name) {
    if (std::string path = env(variable); !path.empty()) {
        return path;
    }
    return default_socket_dir() + "/" + file_name;
}

} // namespace

Endpoint default_endpoint() {
    Endpoint endpoint;
    endpoint.socket_path = socket_path("HSMSIM_SOCKET", "client.sock");
    return endpoint;
}

Endpoint default_admin_endpoint() {
    Endpoint endpoint;
    endpoint.socket_path = socket_path("HSMSIM_ADMIN_SOCKET", "admin.sock");
    return endpoint;
}

} // namespace preloadrun::hsm
