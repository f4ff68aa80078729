#pragma once
// preloadrun without a command: keep the tokens loaded until SIGTERM or
// SIGINT, for applications started elsewhere (another shell, systemd units).

#include "app_environment.hpp"
#include "core/event_loop.hpp"

#include <filesystem>
#include <string>

namespace preloadrun::supervisor {

// The lines that point a POSIX shell at the tokens file, as ssh-agent prints
// them: NAME=value; export NAME; (and unset NAME;)
std::string shell_lines(const AppEnvironment& env);

// Prints shell_lines() on stdout, then points stdout at /dev/null (so that a
// command substitution sees the end of it), tells systemd it is ready, and
// runs `loop` (where the HA loop works) until SIGTERM or SIGINT. Returns 0.
int run_service_mode(EventLoop& loop, const AppEnvironment& env);

} // namespace preloadrun::supervisor
