#pragma once
// Who a process is, in a way that survives pid reuse: pid, start time (clock
// ticks since boot, /proc/<pid>/stat field 22), the boot it belongs to, and the
// host.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace preloadrun {

struct ProcessIdentity {
    pid_t pid = 0;
    std::uint64_t start_time = 0; // clock ticks since boot
    std::string boot_id;          // /proc/sys/kernel/random/boot_id
    std::string hostname;
    bool operator==(const ProcessIdentity&) const = default;
};

// This process.
ProcessIdentity self_identity();

// The start time of `pid` if that process is visible in /proc, else nullopt.
std::optional<std::uint64_t> process_start_time(pid_t pid);

// Field 22 (the start time) of the text of a /proc/<pid>/stat, nullopt when
// the text has no such field. Its field 2, the command name, is whatever the
// process chose (up to 15 bytes, any but NUL).
std::optional<std::uint64_t> proc_stat_start_time(std::string_view stat);

// The current boot's id (cached after the first call).
const std::string& current_boot_id();

std::string current_hostname();

} // namespace preloadrun
