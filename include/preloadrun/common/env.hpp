#pragma once
// Reading the environment: a variable set to the empty string counts as unset,
// and a process running with more privileges than its caller (setuid,
// setgid, file capabilities: AT_SECURE) sees none at all, so that whoever
// starts it cannot point it at a service, a file or a log of their choosing
// (secure_getenv). The PKCS#11 module may be loaded by such a program.

namespace preloadrun {

// The value of `name`, or nullptr when it is unset or empty, or when this
// process runs in secure-execution mode.
const char* getenv_nonempty(const char* name) noexcept;

// A variable with an older name that is still read: `name`'s value, else
// `alias`'s (as getenv_nonempty), else nullptr.
struct AliasedVariable {
    const char* name;
    const char* alias;
};
const char* getenv_nonempty(const AliasedVariable& variable) noexcept;
// The same, with the name the value was found under (nullptr with it).
struct FoundVariable {
    const char* value = nullptr;
    const char* name = nullptr;
};
FoundVariable getenv_found(const AliasedVariable& variable) noexcept;

// The HSM service's socket, as its clients read it (hsm::default_endpoint())
// and as preloadrun sets it for its child (tokens/environment.hpp). The
// older name is still read; preloadrun sets both.
inline constexpr AliasedVariable kServiceSocketVariable{"HSMFLEET_SOCKET", "HSMSIM_SOCKET"};

} // namespace preloadrun
