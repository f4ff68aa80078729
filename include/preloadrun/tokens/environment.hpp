#pragma once
// The environment that points an application at a tokens file: preloadrun
// sets it for its child (or prints it in service mode), the PKCS#11 module
// reads it at C_Initialize. The names are nShield's, so that applications
// configured for nShield need no change. See preloadrun-tokens(5).

#include "preloadrun/common/env.hpp"

#include <string_view>

namespace preloadrun::tokens::env {

// The tokens file's absolute path.
inline constexpr const char* kTokensFile = "NFAST_NFKM_TOKENSFILE";
// Keys load-shared over every usable module (preloadrun sets it always).
inline constexpr const char* kLoadSharing = "CKNFAST_LOADSHARING";
// Keys reloaded as the file changes: set with high availability, removed
// from the child's environment without (--no-ha), since the file then never
// changes. Implies load-sharing.
inline constexpr const char* kReloadKeys = "CKNFAST_RELOAD_KEYS";
// The HSM service the tokens were loaded on (an absolute socket path): the
// handles of the file mean something only there. Set when preloadrun was
// told a socket (--socket, or the variable in its own environment). The
// reader takes it as every client of the service does
// (hsm::default_endpoint()). Set under both names: the older one, still
// read, must not name another service.
inline constexpr AliasedVariable kServiceSocket = kServiceSocketVariable;

// The value preloadrun gives the flags above.
inline constexpr const char* kOn = "1";

// How a reader takes a flag's value (nShield's convention): set, not empty
// and not "0". `value` is getenv()'s answer (null when unset).
inline bool flag_on(const char* value) noexcept {
    return value != nullptr && *value != '\0' && std::string_view(value) != "0";
}

} // namespace preloadrun::tokens::env
