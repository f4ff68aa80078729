#pragma once
// What the programs' command lines share: parsing with CLI11 into one of
// "go on", "done" (--help, --version) or "usage error" (one line on stderr),
// and the logging options -v/-q/--log-level. Header-only: users link CLI11.

#include "preloadrun/common/log.hpp"

#include <CLI/CLI.hpp>
#include <cstddef>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

namespace preloadrun {

// --help that fits an 80-column terminal: descriptions wrapped beside the
// option column, and an option's value shown by its type name only (a check
// such as a range is stated in the description, not as ":UINT in [1 - 128]").
// `usage`, when given, replaces the top-level command's usage line(s).
class HelpFormatter : public CLI::Formatter {
public:
    static constexpr std::size_t kWidth = 80;
    static constexpr std::size_t kColumn = 30;

    explicit HelpFormatter(std::string usage = {}) : usage_(std::move(usage)) {
        column_width(kColumn);
    }

    std::string make_usage(const CLI::App* app, std::string name) const override {
        if (!usage_.empty() && app->get_parent() == nullptr) {
            return usage_;
        }
        return CLI::Formatter::make_usage(app, std::move(name));
    }

    std::string make_option_opts(const CLI::Option* opt) const override {
        std::string type = opt->get_type_name(); // empty for a flag
        type = type.substr(0, type.find(':'));
        return type.empty() || opt->get_type_size() == 0 ? std::string() : " " + type;
    }

    std::string make_option(const CLI::Option* opt, bool is_positional) const override {
        std::string name = make_option_name(opt, is_positional);
        if (!is_positional) {
            name += make_option_opts(opt);
        }
        return row(name, opt->get_description());
    }

    std::string make_subcommand(const CLI::App* sub) const override {
        return row(sub->get_display_name(), sub->get_description());
    }

    // "  NAME<padding>DESCRIPTION", the description word-wrapped to kWidth
    // (onto its own lines when NAME reaches into its column).
    static std::string row(const std::string& name, const std::string& description) {
        std::string out = "  " + name;
        std::size_t column = out.size();
        auto next_line = [&] {
            out += "\n" + std::string(kColumn, ' ');
            column = kColumn;
        };
        if (column >= kColumn) {
            next_line();
        } else {
            out.append(kColumn - column, ' ');
            column = kColumn;
        }
        bool first = true;
        std::size_t pos = 0;
        while (pos < description.size()) {
            auto end = description.find(' ', pos);
            if (end == std::string::npos) {
                end = description.size();
            }
            std::string word = description.substr(pos, end - pos);
            pos = end + 1;
            if (word.empty()) {
                continue;
            }
            if (!first && column + 1 + word.size() > kWidth) {
                next_line();
                first = true;
            }
            if (!first) {
                out += ' ';
                ++column;
            }
            out += word;
            column += word.size();
            first = false;
        }
        return out + "\n";
    }

private:
    std::string usage_;
};

// Parses argv. nullopt: parsed, go on. Otherwise the exit status: 0 after
// printing --help or --version, usage_status() after a usage error (printed
// as one line, "PROGRAM: what (see PROGRAM [SUBCOMMAND...] --help)", naming
// the innermost subcommand given).
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
        // The help that lists what is wrong: that of the innermost
        // subcommand given ("hsmsim key generate --help" for its --type).
        std::string command = app.get_name();
        for (const CLI::App* at = &app; !at->get_subcommands().empty();) {
            at = at->get_subcommands().front();
            command += " " + at->get_name();
        }
        std::cerr << app.get_name() << ": " << e.what() << " (see " << command << " --help)\n";
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
