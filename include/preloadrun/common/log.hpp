#pragma once
// One logging setup for the three programs: spdlog, a named logger per
// subsystem, levels chosen by -v/-q/--log-level (or an environment variable
// for the PKCS#11 module), always to stderr or a file, never to stdout.
//
// The loggers live in this module's own table, never in spdlog's global
// registry or default logger: the PKCS#11 module runs inside applications
// that may use spdlog themselves. Until setup() or use_sink() is called,
// logging is off.

#include <memory>
#include <optional>
#include <spdlog/spdlog.h>
#include <string>
#include <string_view>

namespace preloadrun::log {

struct Config {
    std::string program; // "preloadrun", "hsmsim", ...
    spdlog::level::level_enum level = spdlog::level::info;
    std::optional<std::string> file; // a log file instead of stderr
    bool color = false;              // only on a terminal, never with NO_COLOR
};

// Parses "trace|debug|info|warn|error|critical|off"; throws Error(usage).
spdlog::level::level_enum parse_level(std::string_view text);

// Level from the base level and the counts of -v and -q.
spdlog::level::level_enum adjust_level(spdlog::level::level_enum base, int verbose, int quiet);

// True when stderr is a terminal and NO_COLOR is unset or empty.
bool want_color();

// Installs the sinks; every logger made by get(), before or after, uses them.
void setup(const Config& config);

// Sends every subsystem's lines to `sink` at `level` (the PKCS#11 module
// routes the shared code's lines into its own log this way).
void use_sink(spdlog::sink_ptr sink, spdlog::level::level_enum level);

// The logger of a subsystem ("hsm", "sim.service", "supervisor", ...).
std::shared_ptr<spdlog::logger> get(const std::string& subsystem);

} // namespace preloadrun::log
