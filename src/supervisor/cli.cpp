#include "cli.hpp"

#include "core/supervisor.hpp"
#include "inspect.hpp"
#include "preloadrun/common/cli.hpp"
#include "preloadrun/common/dumpable.hpp"
#include "preloadrun/common/duration.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/hsm/protobuf_logs.hpp"
#include "preloadrun/version.hpp"
#include "run.hpp"
#include "token_resolution.hpp"

#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>

namespace preloadrun::supervisor {

namespace {

constexpr const char* kDescription =
    "preloadrun: load HSM tokens onto every usable HSM, keep them loaded while\n"
    "HSMs are cleared, fail, come back or join, and run COMMAND with a live\n"
    "tokens file.";

constexpr const char* kUsage = "Usage: preloadrun [OPTIONS] [--] COMMAND [ARG...]\n"
                               "       preloadrun [OPTIONS]       (no COMMAND: keep the tokens "
                               "loaded)\n"
                               "       preloadrun check|status [FILE]\n";

constexpr const char* kExamples = R"(Examples:
  preloadrun -s mycard -- myapp --serve
      run myapp with softcard mycard loaded on every HSM
  preloadrun -s a -s b --passphrase-fd 3 -- myapp 3<pass.txt
      two softcards, their passphrases one per line on descriptor 3
  preloadrun -s mycard -f /run/app/tokens.json
      keep mycard loaded for others; print the shell lines that point at it
  preloadrun --attach /run/app/tokens.json -- tool
      run tool against a live tokens file
  preloadrun check /run/app/tokens.json
      is it live? (exit 0 yes, 1 no, 3 this user cannot check)
  preloadrun status --json
      in an application under preloadrun: what its $NFAST_NFKM_TOKENSFILE holds

Exit status: COMMAND's; 128+N if it died of signal N; 125 if preloadrun
failed; 126 if COMMAND is not executable; 127 if not found. See preloadrun(1).)";

// A descriptor number: 0, 1, 2, ...
const CLI::Validator kDescriptor(
    [](std::string& value) {
        int fd = -1;
        auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), fd);
        if (ec != std::errc() || ptr != value.data() + value.size() || value.empty() || fd < 0) {
            return "'" + value + "' is not a descriptor number (0, 1, 2, ...)";
        }
        return std::string();
    },
    "FD");

// The run's options as CLI11 fills them, before they become Options.
struct RunArguments {
    std::vector<std::string> softcards;
    std::vector<std::string> cardsets;
    std::vector<std::string> passphrase_files;
    std::string retry_window;
    bool no_ha = false;
};

void add_run_options(CLI::App& app, Options& options, RunArguments& args) {
    app.add_option("-s,--softcard", args.softcards, "Load this softcard (name or hash); repeatable")
        ->type_name("NAME|HASH")
        ->allow_extra_args(false); // one value each: COMMAND may follow
    app.add_option("-c,--cardset", args.cardsets, "Load this card set (name or hash); repeatable")
        ->type_name("NAME|HASH")
        ->allow_extra_args(false); // one value each: COMMAND may follow
    app.add_option("--passphrase-file", args.passphrase_files,
                   "Passphrase from FILE, for every token or for TOKEN only; repeatable")
        ->type_name("[TOKEN=]FILE")
        ->allow_extra_args(false); // one value each: COMMAND may follow
    app.add_option("--passphrase-fd", options.passphrase_fd,
                   "Passphrases from descriptor FD, one line per token, in order")
        ->type_name("FD")
        ->check(kDescriptor);
    app.add_option("-f,--tokens-file", options.tokens_file,
                   "Tokens file path (default: one per run under $XDG_RUNTIME_DIR/preloadrun)")
        ->type_name("PATH");
    app.add_option("--attach", options.attach,
                   "Run COMMAND against this live tokens file instead of loading tokens")
        ->type_name("FILE");
    app.add_option("--group", options.group, "Make the tokens file readable by GROUP (mode 0640)")
        ->type_name("GROUP");
    app.add_flag("--no-ha", args.no_ha,
                 "Load once; no reloading, and CKNFAST_RELOAD_KEYS is not set");
    app.add_option("--retry-window", args.retry_window,
                   "How long to retry loading onto a module: 30s, 5m, 1h, 1500ms "
                   "(default: 5m)")
        ->type_name("DURATION");
    app.add_flag("--subreaper", options.subreaper,
                 "Adopt and reap orphaned descendants (implicit as PID 1)");
    app.add_flag("--process-group", options.process_group,
                 "Forward signals to COMMAND's whole process group, not COMMAND alone");
    app.add_option("--socket", options.socket, "HSM service socket (default: $HSMFLEET_SOCKET)")
        ->type_name("PATH");
}

// Options from what was parsed, and the usage errors CLI11 cannot see.
void finish_run_options(Options& options, const RunArguments& args,
                        std::vector<std::string> remaining) {
    for (const auto& name : args.softcards) {
        options.tokens.push_back({"softcard", name});
    }
    for (const auto& name : args.cardsets) {
        options.tokens.push_back({"cardset", name});
    }
    for (const auto& text : args.passphrase_files) {
        options.passphrase_files.push_back(parse_passphrase_file(text));
    }
    options.high_availability = !args.no_ha;
    if (!args.retry_window.empty()) {
        try {
            options.retry_window = parse_duration(args.retry_window);
        } catch (const Error& e) {
            throw Error(e.code(), std::string("--retry-window: ") + e.what());
        }
    }
    options.command = std::move(remaining);
    if (!options.command.empty() && options.command.front() == "--") {
        options.command.erase(options.command.begin());
    } else if (!options.command.empty() && options.command.front().starts_with("-")) {
        // prefix_command() takes an unknown option for the start of COMMAND.
        throw Error(ErrorCode::usage, "unknown option " + options.command.front() +
                                          " (see preloadrun --help; a COMMAND that starts "
                                          "with '-' goes after --)");
    }
    if (!options.attach.empty()) {
        if (options.command.empty()) {
            throw Error(ErrorCode::usage, "--attach needs a COMMAND to run");
        }
        if (!options.tokens.empty() || !options.tokens_file.empty()) {
            throw Error(ErrorCode::usage,
                        "--attach uses an existing tokens file: it takes no -s, -c or -f");
        }
    }
    if ((options.passphrase_fd || !options.passphrase_files.empty()) && options.tokens.empty()) {
        throw Error(ErrorCode::usage,
                    "a passphrase option is given but no token to load (-s or -c)");
    }
    if (options.passphrase_fd) {
        consume_inherited_descriptor(*options.passphrase_fd); // never the child's
    }
}

} // namespace

int run_cli(int argc, char** argv) noexcept {
    int subcommand_status = -1;
    try {
        // Before anything opens a descriptor or touches a disposition: what
        // the caller passed is what the child gets.
        record_caller_signal_state();
        record_inherited_descriptors();
        make_undumpable(); // before any passphrase: not even the child may read them
        CLI::App app(kDescription, "preloadrun");
        app.formatter(std::make_shared<HelpFormatter>(kUsage));
        app.prefix_command();
        app.set_version_flag("--version",
                             std::string("preloadrun ") + kVersion + " (" + kGitRevision + "; " +
                                 kBuildInfo + ")",
                             "Print version and build information");
        Options options;
        LogOptions log_options;
        RunArguments args;
        add_run_options(app, options, args);
        log_options.add_to(app);

        std::string file;
        bool json = false;
        auto* check = app.add_subcommand("check", "Is FILE (default $NFAST_NFKM_TOKENSFILE) live?");
        check->add_option("FILE", file, "Tokens file");
        auto* status = app.add_subcommand("status", "Show owner, tokens, modules, generation");
        status->add_option("FILE", file, "Tokens file");
        status->add_flag("--json", json, "JSON output");
        for (auto* sub : {check, status}) {
            // Unlike the main command, whose COMMAND takes everything after it.
            sub->prefix_command(false);
            sub->allow_extras(false);
        }
        app.footer(kExamples); // after the subcommands: they would copy it

        if (auto done = parse_command_line(app, argc, argv, [&] {
                return (check->parsed() || status->parsed()) ? kCheckUsage : kExitPreloadrunFailed;
            })) {
            return *done;
        }
        log_options.setup("preloadrun");
        hsm::codec::route_protobuf_logs();

        if (check->parsed() || status->parsed()) {
            subcommand_status = kCheckUsage;
            auto path = tokens_file_argument(file);
            return check->parsed() ? check_command(path) : status_command(path, json);
        }

        finish_run_options(options, args, app.remaining());
        return run(options);
    } catch (const Error& e) {
        std::cerr << "preloadrun: " << e.what() << "\n";
        return subcommand_status >= 0 ? subcommand_status : kExitPreloadrunFailed;
    } catch (const std::exception& e) {
        std::cerr << "preloadrun: internal error: " << e.what() << "\n";
        return subcommand_status >= 0 ? subcommand_status : kExitPreloadrunFailed;
    }
}

} // namespace preloadrun::supervisor
