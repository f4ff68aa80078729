#pragma once
// Starting COMMAND: execvp-like lookup in PATH, the child's environment, and
// the fork/exec itself (Boost.Process v2) with a child-side setup that gives
// the child a clean slate: its own process group (and the terminal, when
// asked), an empty signal mask, default dispositions but for the signals the
// caller ignored, fds 0-2 and the descriptors the caller passed to
// preloadrun (never preloadrun's own), LISTEN_PID rewritten for socket
// activation, and SIGTERM should preloadrun die before it (PR_SET_PDEATHSIG).
// Exit statuses and the ENOEXEC rule as env(1) (execvp).

#include <exception>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace preloadrun::supervisor {

inline constexpr int kExitPreloadrunFailed = 125;
inline constexpr int kExitNotExecutable = 126;
inline constexpr int kExitNotFound = 127;

struct ChildSpec {
    std::vector<std::string> argv;                            // argv[0] looked up in PATH
    std::vector<std::pair<std::string, std::string>> set_env; // added/overridden
    std::vector<std::string> unset_env;                       // removed from the environment
};

// The descriptors above 2 that preloadrun inherited from its caller: call
// record_inherited_descriptors() first thing in main(), before anything is
// opened. Those (and only those) pass to the child, but for the ones
// preloadrun consumes itself (--passphrase-fd), given to
// consume_inherited_descriptor().
void record_inherited_descriptors();
void consume_inherited_descriptor(int fd);
const std::vector<int>& inherited_descriptors();

// The child's environment ("NAME=value" strings): ours (environ) minus
// unset_env, with set_env added or overriding, in the original order.
std::vector<std::string> child_environment(const ChildSpec& spec);

// The file execvp() would run for `name` with this PATH value (nullptr: the
// default "/bin:/usr/bin"): `name` itself if it contains a '/', else the
// first executable regular file PATH/name. Throws Error(not_found)
// "NAME: command not found" (no '/') or "NAME: no such file or directory",
// Error(permission) "NAME: permission denied" / "NAME: is a directory" when
// only non-executable candidates exist.
std::string resolve_command(const std::string& name, const char* path);

struct SpawnOptions {
    int terminal_fd = -1;       // controlling terminal, when the child gets it
    bool give_terminal = false; // make the child's group the foreground group
};

// Forks and execs; returns the child's pid (also its process group id) once
// the exec has succeeded. The child is not waited for: the caller reaps it.
// A file the kernel cannot execute (ENOEXEC: a script without "#!") runs
// through /bin/sh, as execvp() and env(1) do. Throws Error(not_found) -> 127
// (also a missing "#!" interpreter or ELF loader, as env(1)),
// Error(permission) -> 126 (not executable, argument list too long, ...),
// Error(internal) -> 125 (fork failed, ...); a child that failed to exec has
// been reaped and the terminal given back before the throw.
pid_t spawn_child(const ChildSpec& spec, const SpawnOptions& options);

// The exit status for an error from resolve_command or spawn_child: the
// spawn column of error_table.def (127 for Error(not_found), 126 for
// Error(permission), else 125).
int exit_status_for_spawn_error(const std::exception& error);

} // namespace preloadrun::supervisor
