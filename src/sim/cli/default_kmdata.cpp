#include "cli/default_kmdata.hpp"

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"

#include <cstdlib>
#include <unistd.h>

namespace preloadrun::sim {

std::filesystem::path default_kmdata() {
    if (const char* kmdata = getenv_nonempty("NFAST_KMDATA")) {
        return kmdata;
    }
    if (::geteuid() == 0) {
        return "/var/lib/hsmsim/kmdata";
    }
    if (const char* data = getenv_nonempty("XDG_DATA_HOME")) {
        return std::filesystem::path(data) / "hsmsim" / "kmdata";
    }
    if (const char* home = getenv_nonempty("HOME")) {
        return std::filesystem::path(home) / ".local" / "share" / "hsmsim" / "kmdata";
    }
    throw Error(ErrorCode::usage, "no Security World directory: set NFAST_KMDATA or use --kmdata");
}

} // namespace preloadrun::sim
