#include "sim/paths.hpp"

#include "preloadrun/common/error.hpp"

#include <cstdlib>
#include <unistd.h>

namespace preloadrun::sim {

namespace {
const char* env(const char* name) {
    const char* value = std::getenv(name);
    return (value != nullptr && *value != '\0') ? value : nullptr;
}
} // namespace

std::filesystem::path default_kmdata() {
    if (const char* kmdata = env("NFAST_KMDATA")) {
        return kmdata;
    }
    if (::geteuid() == 0) {
        return "/var/lib/hsmsim/kmdata";
    }
    if (const char* data = env("XDG_DATA_HOME")) {
        return std::filesystem::path(data) / "hsmsim" / "kmdata";
    }
    if (const char* home = env("HOME")) {
        return std::filesystem::path(home) / ".local" / "share" / "hsmsim" / "kmdata";
    }
    throw Error(ErrorCode::usage, "no Security World directory: set NFAST_KMDATA or use --kmdata");
}

} // namespace preloadrun::sim
