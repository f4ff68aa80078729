#include "preloadrun/common/runtime_dir.hpp"

#include "preloadrun/common/accounts.hpp"
#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"

#include <unistd.h>

namespace preloadrun {

namespace {

// The home directory of the effective user in the user database, or "".
std::filesystem::path home_from_database() {
    const auto user = accounts::user_by_uid(::geteuid());
    return user ? std::filesystem::path(user->home) : std::filesystem::path();
}

} // namespace

std::filesystem::path user_runtime_dir(std::string_view name) {
    if (const char* runtime = getenv_nonempty("XDG_RUNTIME_DIR")) {
        std::filesystem::path dir(runtime);
        if (dir.is_absolute()) {
            return dir / name;
        }
    }
    std::filesystem::path home;
    if (const char* value = getenv_nonempty("HOME")) {
        home = value;
    } else {
        home = home_from_database();
    }
    if (home.empty() || !home.is_absolute() || home == "/") {
        throw Error(ErrorCode::usage,
                    "no runtime directory for " + std::string(name) +
                        ": neither XDG_RUNTIME_DIR nor a home directory is set (HOME is '" +
                        home.string() + "')");
    }
    return home / ("." + std::string(name));
}

} // namespace preloadrun
