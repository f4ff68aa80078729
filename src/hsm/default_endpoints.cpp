#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/runtime_dir.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <cstdlib>
#include <string>

namespace preloadrun::hsm {

namespace {

std::string env(const char* name) {
    const char* value = getenv_nonempty(name);
    return value != nullptr ? std::string(value) : std::string();
}

// $XDG_RUNTIME_DIR/hsmsim, else $HOME/.hsmsim: never a directory another
// user could create first (as one under /tmp).
std::string socket_path(const char* variable, const char* file_name) {
    if (std::string path = env(variable); !path.empty()) {
        return path;
    }
    try {
        return (user_runtime_dir("hsmsim") / file_name).string();
    } catch (const Error& e) {
        throw Error(e.code(), std::string(e.what()) + "; set " + variable);
    }
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
