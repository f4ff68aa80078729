#include "cli/cli.hpp"

#include "cli/commands.hpp"
#include "cli/default_kmdata.hpp"
#include "model/world_format.hpp"
#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/cli.hpp"
#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/dumpable.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/hsm/protobuf_logs.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "preloadrun/version.hpp"
#include "server/own_directory.hpp"
#include "server/serve.hpp"

#include <CLI/CLI.hpp>
#include <filesystem>
#include <functional>
#include <iostream>
#include <unistd.h>

namespace preloadrun::sim {

namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

struct GlobalOptions {
    std::string socket;
    std::string admin_socket;
    LogOptions log;
};

// The hsmsim columns of error_table.def: whether the service reported the
// error matters (it answered, so it is never "cannot reach the service").
int exit_status(const Error& error) {
    return error_info(error.code()).hsmsim_exit(error.origin());
}
static_assert(error_info(ErrorCode::usage).hsmsim_local == kExitUsage);
static_assert(error_info(ErrorCode::unavailable).hsmsim_local == kExitUnreachable);
static_assert(error_info(ErrorCode::unavailable).hsmsim_peer == kExitFailed);

// The program's two names: hsmfleet, the HSM service in front of a fleet of
// PKCS#11 tokens or of simulated HSMs, and hsmsim, the same program whose
// `serve` simulates (hsmfleet serve --simulate). Messages, the ready line and
// --help use the name it was run under.
struct Naming {
    std::string name;
    bool simulator; // run as hsmsim
};
Naming naming_of(const char* argv0) {
    const std::string base =
        argv0 != nullptr ? std::filesystem::path(argv0).filename().string() : std::string();
    if (base == "hsmsim") {
        return {"hsmsim", true};
    }
    return {"hsmfleet", false};
}
Naming g_naming{"hsmfleet", false};

std::string version_text() {
    return g_naming.name + " " + kVersion + " (" + kGitRevision + "; " + kBuildInfo + ")";
}

// This program, which runs the members' workers.
std::string own_program() {
    std::error_code ec;
    auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) {
        throw Error(ErrorCode::internal,
                    "cannot find this program (/proc/self/exe): " + ec.message());
    }
    return path.string();
}

Endpoints endpoints(const GlobalOptions& g) {
    Endpoints ep{hsm::default_endpoint(), hsm::default_admin_endpoint()};
    if (!g.socket.empty()) {
        ep.client.socket_path = g.socket;
    }
    if (!g.admin_socket.empty()) {
        ep.admin.socket_path = g.admin_socket;
    }
    ep.client.client_name = ep.admin.client_name = g_naming.name + " " + kVersion;
    return ep;
}

constexpr const char* kSimulatorExamples = R"(Examples:
  hsmsim serve --modules 3 &
      a fleet of 3 HSMs; prints "hsmsim: ready: ..." once listening
  hsmsim softcard create mycard
      a softcard (asks for its passphrase twice)
  hsmsim key generate --type ec-p256 --label signer --protect softcard:mycard
      an EC key protected by the softcard
  hsmsim module clear 2
      reset HSM 2: its objects are gone, its generation goes up
  hsmsim module list
      the fleet: state, generation, operation counters

hsmsim is hsmfleet with simulated HSMs (hsmfleet serve --simulate).
Exit status: 0 done; 1 failed; 2 usage error; 3 the HSM service is
unreachable. See hsmsim(1).)";

constexpr const char* kFleetExamples = R"(Examples:
  hsmfleet serve --fleet /etc/hsmfleet/fleet.toml &
      front the PKCS#11 tokens of the file (man 5 preloadrun-fleet)
  hsmfleet module list
      the fleet: state, generation, operations, failures, latency
  hsmfleet module drain 2
      take HSM 2 out of service for maintenance (undrain: back)
  hsmfleet softcard list
      the token sets that preloadrun -s can load
  hsmfleet serve --simulate --modules 3 &
      simulated HSMs instead (as hsmsim serve --modules 3)

Exit status: 0 done; 1 failed; 2 usage error; 3 the HSM service is
unreachable. See hsmfleet(1).)";

using Action = std::function<void()>;

CLI::App* add_command(CLI::App& parent, const std::string& name, const std::string& help) {
    auto* sub = parent.add_subcommand(name, help);
    sub->fallthrough();
    // At most one; "none given" is reported by missing_subcommand().
    sub->require_subcommand(0, 1);
    return sub;
}

// Parsing only chooses the action; it runs once logging is set up.
void on_run(CLI::App* sub, Action& slot, Action action) {
    sub->callback([&slot, action = std::move(action)] { slot = action; });
}

// The module subcommands that take a module number and do one action.
void add_module_actions(CLI::App& module, const GlobalOptions& g, std::uint32_t& number,
                        Action& action) {
    static constexpr std::pair<const char*, hsm::ModuleAction> actions[] = {
        {"clear", hsm::ModuleAction::clear},     {"fail", hsm::ModuleAction::fail},
        {"restore", hsm::ModuleAction::restore}, {"remove", hsm::ModuleAction::remove},
        {"drain", hsm::ModuleAction::drain},     {"undrain", hsm::ModuleAction::undrain},
    };
    static constexpr const char* help[] = {
        "Clear module N: drop its objects, bump its generation, re-initialise",
        "Make module N fail: it drops its objects and stops serving",
        "Bring a failed or removed module N back (new generation, re-initialises)",
        "Remove module N from the fleet (it stays enrolled in the world)",
        ("Take module N out of service for maintenance: no new operations, those "
         "under way finish"),
        "Put a drained module N back in service (new generation, re-initialises)",
    };
    for (std::size_t i = 0; i < std::size(actions); ++i) {
        auto* sub = add_command(module, actions[i].first, help[i]);
        sub->add_option("N", number, "Module number (1-128)")
            ->required()
            ->check(CLI::Range(1u, 128u));
        auto what = actions[i].second;
        on_run(sub, action, [&g, &number, what] { control_module(endpoints(g), number, what); });
    }
}

// The quotas of `hsmsim serve` on what the clients store in the world.
void add_world_limits(CLI::App& serve, WorldLimits& limits) {
    serve
        .add_option(kMaxKeysOption, limits.max_keys_per_uid,
                    "Persistent keys one uid may create (1-1000000; default 10000)")
        ->type_name("N")
        ->check(CLI::Range(1u, 1000000u));
    serve
        .add_option(kMaxTokensOption, limits.max_tokens_per_uid,
                    "Softcards and card sets one uid may create (1-100000; default 1000)")
        ->type_name("N")
        ->check(CLI::Range(1u, 100000u));
    serve
        .add_option_function<std::uint32_t>(
            kMaxWorldOption,
            [&limits](std::uint32_t mib) { limits.max_bytes = std::uint64_t{mib} * 1024 * 1024; },
            "Size the world's files may reach, in MiB (1-65536; default 256)")
        ->type_name("MIB")
        ->check(CLI::Range(1u, 65536u));
}

// How `hsmsim serve` shares its connections, and when it closes idle ones.
void add_connection_limits(CLI::App& serve, ServeOptions& options) {
    serve
        .add_option(kMaxConnectionsOption, options.max_connections,
                    "Connections the client socket serves at once, 16 of them kept for root and "
                    "the service's user (32-65536; default 256)")
        ->type_name("N")
        ->check(CLI::Range(static_cast<std::uint32_t>(kMinMaxConnections),
                           static_cast<std::uint32_t>(kMaxMaxConnections)));
    serve
        .add_option(kMaxConnectionsPerUidOption, options.max_connections_per_uid,
                    "Connections one user other than root and the service's user may have open "
                    "(1 to --max-connections less 16; default 32)")
        ->type_name("N")
        ->check(CLI::Range(1u, static_cast<std::uint32_t>(kMaxMaxConnections)));
    serve
        .add_option_function<std::uint32_t>(
            kIdleTimeoutOption,
            [&options](std::uint32_t seconds) {
                options.idle_timeout = std::chrono::seconds(seconds);
            },
            "Close a connection idle this long, unless it keeps what its process loaded "
            "(0-86400; 0: never; default 300)")
        ->type_name("SECONDS")
        ->check(CLI::Range(0u, static_cast<std::uint32_t>(kMaxIdleTimeout.count())));
}

// A key's ident: 40 lowercase hex digits.
const CLI::Validator kIdent(
    [](std::string& value) {
        return valid_ident(value) ? std::string() : "an ident is 40 lowercase hex digits";
    },
    "IDENT");

// A key's CKA_ID: hex digits, two per byte.
const CLI::Validator kHexBytes(
    [](std::string& value) {
        return is_hex(value) ? std::string()
                             : "an id is hex digits, two per byte (such as 01 or 0a1b)";
    },
    "HEX");

// What the command line fills in, and the action it chose.
struct CliValues {
    GlobalOptions g;
    ServeOptions serve_options;
    GenerateOptions gen;
    std::string name;
    std::optional<std::string> passphrase_file;
    bool json = false;
    bool with_keys = false;
    std::uint32_t number = 0;
    std::uint32_t value = 0;
    int serve_status = kExitOk;
    Action action;
};

// hsmsim serve.
void build_serve(CLI::App& app, CliValues& v) {
    auto& g = v.g;
    auto& serve_options = v.serve_options;
    auto& serve_status = v.serve_status;
    auto& action = v.action;
    auto* serve = add_command(app, "serve", "Run the HSM service in the foreground");
    auto* fleet = serve
                      ->add_option("--fleet", serve_options.fleet_config,
                                   "Serve the PKCS#11 members and token sets of FILE "
                                   "(man 5 preloadrun-fleet) instead of simulated HSMs")
                      ->type_name("FILE");
    serve
        ->add_flag("--simulate", serve_options.simulate,
                   "Serve simulated HSMs (what hsmsim serve does)")
        ->excludes(fleet);
    serve
        ->add_option("--kmdata", serve_options.kmdata,
                     "Security World directory (default: $NFAST_KMDATA)")
        ->type_name("DIR")
        ->excludes(fleet);
    serve
        ->add_option("--modules", serve_options.modules,
                     "Modules enrolled on first start (1-128; default 1)")
        ->type_name("N")
        ->check(CLI::Range(1u, 128u))
        ->excludes(fleet);
    serve
        ->add_option("--op-latency-ms", serve_options.op_latency_ms,
                     "Latency of each operation on each module (0-60000; default 0)")
        ->type_name("MS")
        ->check(CLI::Range(0u, 60000u))
        ->excludes(fleet);
    serve
        ->add_option("--init-delay-ms", serve_options.init_delay_ms,
                     "How long a module initialises after clear, restore or add "
                     "(0-600000; default 1000)")
        ->type_name("MS")
        ->check(CLI::Range(0u, 600000u));
    add_world_limits(*serve, serve_options.world_limits);
    serve
        ->add_option("--max-objects-per-uid", serve_options.max_objects_per_uid,
                     "Objects one user may hold on one module (1-100000; default 10000)")
        ->type_name("N")
        ->check(CLI::Range(1u, static_cast<std::uint32_t>(kMaxObjectsPerModule)));
    add_connection_limits(*serve, serve_options);
    on_run(serve, action, [&] {
        if (serve_options.fleet_config.empty() && !serve_options.simulate && !g_naming.simulator) {
            throw Error(ErrorCode::usage,
                        "serve what? --fleet FILE for the PKCS#11 tokens of FILE (man 5 "
                        "preloadrun-fleet), or --simulate for simulated HSMs (see hsmfleet "
                        "serve --help)");
        }
        serve_options.program_name = g_naming.name;
        auto ep = endpoints(g);
        serve_options.socket = ep.client.socket_path;
        serve_options.admin_socket = ep.admin.socket_path;
        if (!serve_options.fleet_config.empty()) {
            serve_options.worker_program = own_program();
        } else if (serve_options.kmdata.empty()) {
            // The default lies a few levels down (~/.local/share/hsmsim/kmdata):
            // make what is missing above it, private.
            serve_options.kmdata = default_kmdata();
            require_own_directory(serve_options.kmdata, ::geteuid(), "the Security World directory",
                                  "NFAST_KMDATA or --kmdata");
            create_directories(serve_options.kmdata.parent_path(), 0700);
        }
        serve_status = sim::serve(serve_options);
    });
}

// hsmsim softcard|cardset create|delete|list.
void build_tokens(CLI::App& app, CliValues& v) {
    auto& g = v.g;
    auto& name = v.name;
    auto& passphrase_file = v.passphrase_file;
    auto& json = v.json;
    auto& with_keys = v.with_keys;
    auto& action = v.action;
    for (auto type : {hsm::TokenType::softcard, hsm::TokenType::cardset}) {
        std::string kind(hsm::to_string(type));
        auto* token = add_command(app, kind, "Manage the world's " + kind + "s");
        auto* create =
            add_command(*token, "create", "Create a " + kind + " (asks for its passphrase)");
        create->add_option("NAME", name, "Name of the new " + kind)->required();
        create
            ->add_option("--passphrase-file", passphrase_file,
                         "Read the passphrase from this file instead of the terminal")
            ->type_name("FILE");
        on_run(create, action,
               [&, type] { create_token(endpoints(g), type, name, passphrase_file); });
        auto* remove =
            add_command(*token, "delete", "Delete a " + kind + " (asks for its passphrase)");
        remove->add_option("NAME", name, "Name of the " + kind + " (see: hsmsim " + kind + " list)")
            ->required();
        remove->add_flag("--with-keys", with_keys, "Delete the keys it protects with it");
        remove
            ->add_option("--passphrase-file", passphrase_file,
                         "Read the passphrase from this file instead of the terminal")
            ->type_name("FILE");
        on_run(remove, action,
               [&, type] { delete_token(endpoints(g), type, name, with_keys, passphrase_file); });
        auto* list = add_command(*token, "list", "List the world's " + kind + "s");
        list->add_flag("--json", json, "JSON output");
        on_run(list, action, [&, type] { list_tokens(endpoints(g), type, json); });
    }
}

// hsmsim key generate|delete|list.
void build_keys(CLI::App& app, CliValues& v) {
    auto& g = v.g;
    auto& gen = v.gen;
    auto& name = v.name;
    auto& passphrase_file = v.passphrase_file;
    auto& json = v.json;
    auto& action = v.action;
    auto* key = add_command(app, "key", "Manage the world's persistent keys");
    auto* generate = add_command(*key, "generate", "Generate a persistent key");
    generate
        ->add_option("--type", gen.type,
                     "rsa-2048, rsa-3072, rsa-4096, ec-p256, ec-p384, aes-128, aes-192 or aes-256")
        ->type_name("TYPE")
        ->required();
    generate->add_option("--label", gen.label, "The key's label (CKA_LABEL)")
        ->type_name("LABEL")
        ->required();
    generate->add_option("--id", gen.id_hex, "The key's CKA_ID, in hex")
        ->type_name("HEX")
        ->check(kHexBytes);
    generate->add_option("--protect", gen.protect, "module, softcard:NAME or cardset:NAME")
        ->type_name("PROTECTION")
        ->required();
    generate
        ->add_option("--passphrase-file", gen.passphrase_file,
                     "Passphrase of the protecting token, instead of asking")
        ->type_name("FILE");
    generate->add_flag("--allow-duplicate", gen.allow_duplicate,
                       "Make the key even if one under the same protection has its label or id");
    on_run(generate, action, [&] { generate_key(endpoints(g), gen); });
    auto* remove = add_command(*key, "delete", "Delete a persistent key");
    remove->alias("destroy"); // its former name, kept for scripts
    remove->add_option("IDENT", name, "The key's ident (see: hsmsim key list)")
        ->required()
        ->check(kIdent);
    remove
        ->add_option("--passphrase-file", passphrase_file,
                     "Passphrase of the protecting token, instead of asking")
        ->type_name("FILE");
    on_run(remove, action, [&] { delete_key(endpoints(g), name, passphrase_file); });
    auto* keys = add_command(*key, "list", "List the world's persistent keys");
    keys->add_flag("--json", json, "JSON output");
    on_run(keys, action, [&] { list_keys(endpoints(g), json); });
}

// hsmsim module ...
void build_modules(CLI::App& app, CliValues& v) {
    auto& g = v.g;
    auto& json = v.json;
    auto& number = v.number;
    auto& value = v.value;
    auto& action = v.action;
    auto* module = add_command(app, "module", "Show and control the modules");
    auto* modules = add_command(*module, "list", "List the modules, their state and counters");
    modules->add_flag("--json", json, "JSON output");
    on_run(modules, action, [&] { list_modules(endpoints(g), json); });
    add_module_actions(*module, g, number, action);
    auto* add = add_command(*module, "add", "Enrol a new module; prints its number");
    on_run(add, action, [&] { add_module(endpoints(g)); });
    auto* latency = add_command(*module, "latency", "Set module N's per-operation latency");
    latency->add_option("N", number, "Module number (1-128)")
        ->required()
        ->check(CLI::Range(1u, 128u));
    latency->add_option("MS", value, "Latency in milliseconds (0-60000)")
        ->required()
        ->check(CLI::Range(0u, 60000u));
    on_run(latency, action, [&] { set_latency(endpoints(g), number, value); });
    auto* fail =
        add_command(*module, "fail-next", "Make module N's next COUNT operations fail transiently");
    fail->add_option("N", number, "Module number (1-128)")->required()->check(CLI::Range(1u, 128u));
    fail->add_option("COUNT", value, "Number of operations (0 cancels)")
        ->required()
        ->check(CLI::Range(0u, 1000000u));
    on_run(fail, action, [&] { sim::fail_next(endpoints(g), number, value); });
}

void build(CLI::App& app, CliValues& v) {
    auto& g = v.g;
    app.set_version_flag("--version", version_text(), "Print version and build information");
    app.add_option("--socket", g.socket, "Client socket (default: $HSMFLEET_SOCKET)")
        ->type_name("PATH");
    app.add_option("--admin-socket", g.admin_socket,
                   "Admin socket (default: $HSMFLEET_ADMIN_SOCKET)")
        ->type_name("PATH");
    g.log.add_to(app);
    app.require_subcommand(0, 1);
    build_serve(app, v);
    build_tokens(app, v);
    build_keys(app, v);
    build_modules(app, v);
}

// After a parse that chose no action: the command given stops at one that
// needs a subcommand. One line naming them, like any other usage error.
int missing_subcommand(CLI::App& app) {
    CLI::App* at = &app;
    std::string path = app.get_name();
    for (auto subs = at->get_subcommands(); !subs.empty(); subs = at->get_subcommands()) {
        at = subs.front();
        path += " " + at->get_name();
    }
    std::string names;
    for (const auto* sub : at->get_subcommands([](const CLI::App*) { return true; })) {
        names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    std::cerr << path << ": a subcommand is required: " << names << " (see " << path
              << " --help)\n";
    return kExitUsage;
}

} // namespace

int run_cli(int argc, char** argv) noexcept {
    try {
        make_undumpable(); // the world key, token keys, passphrases: every subcommand
        g_naming = naming_of(argc > 0 ? argv[0] : nullptr);
        const auto& name = g_naming.name;
        CLI::App app(g_naming.simulator
                         ? "hsmsim: a simulated fleet of HSMs sharing one Security World"
                         : "hsmfleet: one HSM service in front of a fleet of HSMs, real\n"
                           "(the PKCS#11 tokens of a fleet file) or simulated",
                     name);
        CliValues v;
        app.formatter(std::make_shared<HelpFormatter>());
        build(app, v);
        app.footer(g_naming.simulator ? kSimulatorExamples
                                      : kFleetExamples); // after build(): subcommands would copy it

        if (auto done = parse_command_line(app, argc, argv, [] { return kExitUsage; })) {
            return *done;
        }
        if (!v.action) {
            return missing_subcommand(app);
        }
        v.g.log.setup(g_naming.name);
        hsm::codec::route_protobuf_logs();
        v.action();
        return v.serve_status;
    } catch (const Error& e) {
        std::cerr << g_naming.name << ": " << e.what() << "\n";
        return exit_status(e);
    } catch (const std::exception& e) {
        std::cerr << g_naming.name << ": internal error: " << e.what() << "\n";
        return kExitFailed;
    }
}

} // namespace preloadrun::sim
