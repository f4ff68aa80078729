#pragma once
// What the programs' command lines share: parsing with CLI11 into one of
// "go on", "done" (--help, --version) or "usage error" (one line on stderr),
// and the logging options -v/-q/--log-level. Header-only: users link CLI11.

#include "preloadrun/common/log.hpp"

#include <CLI/CLI.hpp>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

namespace preloadrun {

// Parses argv. nullopt: parsed, go on. Otherwise the exit status: 0 after
// printing --help or --version, usage_status() after a usage error (printed
// as one line, "PROGRAM: what (see PROGRAM --help)").
inline std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv,
                                             const std::function<int()>& usage_status) {
    try {
        app.parse(argc, argv);
        return std::nullopt;
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        std::cerr << app.get_name() << ": " << e.what() << " (see " << app.get_name()
                  << " --help)\n";
        return usage_status();
    }
}

// -v/--verbose and -q/--quiet (repeatable) and --log-level.
struct LogOptions {
    std::string level = "info";
    int verbose = 0;
    int quiet = 0;

    void add_to(CLI::App& app) {
        app.add_option("--log-level", level,
                       "trace, debug, info, warn, error, critical or off (default: info)")
            ->type_name("LEVEL");
        app.add_flag("-v,--verbose", verbose, "More log output (repeatable)");
        app.add_flag("-q,--quiet", quiet, "Less log output (repeatable)");
    }

    // Logging to stderr for `program`, coloured only on a terminal without NO_COLOR.
    void setup(const std::string& program) const {
        log::Config config;
        config.program = program;
        config.level = log::adjust_level(log::parse_level(level), verbose, quiet);
        config.color = log::want_color();
        log::setup(config);
    }
};

} // namespace preloadrun
