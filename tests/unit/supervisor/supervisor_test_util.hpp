#pragma once
// Helpers for the supervision core's tests: the supervised signals blocked
// (as main() does) with nothing stale pending, reading the probe's files,
// running the loop until a condition holds, and the test process's children.

#include "core/supervisor.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <sys/types.h>
#include <vector>

namespace supervisor_test {

using namespace std::chrono_literals;

// The probe program (tests/support/probe.cpp).
inline const std::string kProbe = PROBE_PATH;

// Blocks the supervised signals in this (single-threaded) test process and
// discards any left pending by an earlier test case in the same process.
void block_and_drain_signals();

// "key=value" lines; for repeated keys (env=...) the last one wins, see
// read_env() for the environment.
std::map<std::string, std::string> read_key_values(const std::filesystem::path& file);
// The env= lines of a probe report, as NAME -> list of values (to catch
// duplicates).
std::map<std::string, std::vector<std::string>> read_env(const std::filesystem::path& file);
// A probe --count file: "SIGTERM" -> count (missing file: empty map).
std::map<std::string, int> read_counts(const std::filesystem::path& file);

// Runs loop rounds until `done` holds or `timeout` passes; returns done().
bool run_until(preloadrun::supervisor::EventLoop& loop, const std::function<bool()>& done,
               std::chrono::milliseconds timeout = 10s);

// Runs argv under a Supervisor to the end; returns the exit status.
int run_to_end(const preloadrun::supervisor::ChildSpec& spec);

struct ProcInfo {
    pid_t pid = 0;
    char state = '?';
};
// The processes whose parent is this test process.
std::vector<ProcInfo> children_of_this_process();
// The state letter of /proc/<pid>/stat ('?' when gone).
char process_state(pid_t pid);

} // namespace supervisor_test
