#pragma once
// hsmsim's command line: `hsmsim serve` and the admin commands.

namespace preloadrun::sim {

// Parses argv, runs the command, and maps every failure to an exit status:
// 0 success, 1 the operation failed, 2 usage error, 3 service unreachable.
int run_cli(int argc, char** argv) noexcept;

} // namespace preloadrun::sim
