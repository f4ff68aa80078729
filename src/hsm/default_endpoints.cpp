#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/runtime_dir.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <cstdlib>
#include <string>

namespace preloadrun::hsm {

namespace {

// $XDG_RUNTIME_DIR/hsmsim, else $HOME/.hsmsim: never a directory another
// user could create first (as one under /tmp).
std::string socket_path(const AliasedVariable& variable, const char* file_name) {
    if (const char* path = getenv_nonempty(variable)) {
        return path;
    }
    try {
        return (user_runtime_dir("hsmsim") / file_name).string();
    } catch (const Error& e) {
        throw Error(e.code(), std::string(e.what()) + "; set " + variable.name);
    }
}

} // namespace

Endpoint default_endpoint() {
    Endpoint endpoint;
    endpoint.socket_path = socket_path(kSocketVariable, "client.sock");
    return endpoint;
}

Endpoint default_admin_endpoint() {
    Endpoint endpoint;
    endpoint.socket_path = socket_path(kAdminSocketVariable, "admin.sock");
    return endpoint;
}

} // namespace preloadrun::hsm
