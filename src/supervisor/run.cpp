#include "run.hpp"

#include "app_environment.hpp"
#include "core/reaper.hpp"
#include "core/spawn.hpp"
#include "core/supervisor.hpp"
#include "fleet_state.hpp"
#include "ha_loop.hpp"
#include "loader.hpp"
#include "preloadrun/common/accounts.hpp"
#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/tokens/environment.hpp"
#include "preloadrun/tokens/publisher.hpp"
#include "preloadrun/version.hpp"
#include "service_mode.hpp"
#include "token_resolution.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>
#include <unistd.h>

namespace preloadrun::supervisor {

namespace {

using Loaded = std::map<std::uint32_t, std::map<std::size_t, hsm::ObjectHandle>>;

auto logger() {
    return log::get("supervisor");
}

hsm::Endpoint endpoint_for(const Options& options) {
    auto endpoint = hsm::default_endpoint();
    if (!options.socket.empty()) {
        endpoint.socket_path = options.socket;
    }
    endpoint.client_name = std::string("preloadrun ") + kVersion;
    return endpoint;
}

gid_t group_id(const std::string& name) {
    if (name.empty()) {
        return static_cast<gid_t>(-1);
    }
    const auto entry = accounts::group_by_name(name);
    if (!entry) {
        throw Error(ErrorCode::usage, "--group: no group named '" + name + "'");
    }
    return entry->gid;
}

std::filesystem::path tokens_path(const Options& options, const std::string& instance) {
    if (options.tokens_file.empty()) {
        return tokens::default_path(instance);
    }
    return std::filesystem::absolute(options.tokens_file);
}

ChildSpec child_spec(const Options& options, const AppEnvironment& env) {
    ChildSpec spec;
    spec.argv = options.command;
    spec.set_env = env.set;
    spec.unset_env = env.unset;
    return spec;
}

// Runs COMMAND under the Supervisor on `loop` (where the HA loop also runs).
// A termination signal that arrived while the tokens were loading ends the
// run before the child starts.
int supervise(EventLoop& loop, const ChildSpec& spec, const Options& options) {
    int early_signal = 0;
    Supervisor::Hooks hooks;
    hooks.on_signal_without_child = [&early_signal](int signo) { early_signal = signo; };
    Supervisor supervisor(loop, hooks);
    supervisor.forward_to_process_group(options.process_group);
    loop.run_once(std::chrono::milliseconds(0));
    if (early_signal != 0) {
        logger()->info("{} received before {} started: not starting it", signal_name(early_signal),
                       spec.argv.front());
        return 128 + early_signal;
    }
    if (options.subreaper) {
        become_subreaper();
    }
    try {
        supervisor.start(spec);
    } catch (const std::exception& e) {
        std::cerr << "preloadrun: " << e.what() << "\n";
        return exit_status_for_spawn_error(e);
    }
    logger()->debug("started {} as pid {}", spec.argv.front(), supervisor.pid());
    return supervisor.wait();
}

// Unloads, when the run ends however it ends, what is loaded at that moment.
class UnloadAtExit {
public:
    UnloadAtExit(const Loader& loader, const FleetState& fleet) : loader_(loader), fleet_(fleet) {}
    UnloadAtExit(const UnloadAtExit&) = delete;
    UnloadAtExit& operator=(const UnloadAtExit&) = delete;
    ~UnloadAtExit() {
        Loaded loaded;
        for (const auto& [number, module] : fleet_.modules()) {
            if (!module.handles.empty()) {
                loaded[number] = module.handles;
            }
        }
        loader_.unload(loaded);
    }

private:
    const Loader& loader_;
    const FleetState& fleet_;
};

// The modules to load onto: the usable ones among the first kMaxModules.
std::vector<std::uint32_t> usable_modules(FleetState& fleet,
                                          const std::vector<hsm::ModuleInfo>& modules) {
    std::vector<std::uint32_t> usable;
    for (const auto& module : modules) {
        if (!fleet.admit(module)) {
            continue;
        }
        fleet.update_module(module);
        if (module.state == hsm::ModuleState::usable) {
            usable.push_back(module.number);
        }
    }
    if (usable.empty()) {
        throw Error(ErrorCode::module_not_usable,
                    "no usable module: the HSM service has " + std::to_string(modules.size()) +
                        " module(s) and none is usable now (see: hsmsim module list)");
    }
    return usable;
}

// The HA loop's service: its first subscription is `first` when there is
// one (the connection the modules were listed on), later ones are new.
HaLoop::Seams ha_seams(const hsm::Endpoint& endpoint, std::unique_ptr<hsm::EventStream> first) {
    auto seams = HaLoop::service_seams(endpoint);
    if (first) {
        auto stream = std::make_shared<std::unique_ptr<hsm::EventStream>>(std::move(first));
        seams.subscribe = [stream, later = std::move(seams.subscribe)] {
            return *stream ? std::move(*stream) : later();
        };
    }
    return seams;
}

// A service that has just started may still be bringing its modules up (a
// fleet member's library connecting to its HSM): when none is usable yet but
// some are initialising, waits for them, up to `limit`. Before the signals
// are blocked: Ctrl-C ends the wait, with nothing loaded yet. Returns the
// modules as last listed.
std::vector<hsm::ModuleInfo> wait_while_initialising(hsm::Service& service,
                                                     std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    bool said = false;
    for (;;) {
        const auto modules = service.modules();
        const bool usable = std::any_of(modules.begin(), modules.end(), [](const auto& m) {
            return m.state == hsm::ModuleState::usable;
        });
        const auto initialising = std::count_if(modules.begin(), modules.end(), [](const auto& m) {
            return m.state == hsm::ModuleState::initialising;
        });
        if (usable || initialising == 0 || std::chrono::steady_clock::now() >= deadline) {
            return modules;
        }
        if (!said) {
            logger()->info("no usable module yet: waiting for {} module(s) initialising",
                           initialising);
            said = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
}

void show_progress(std::size_t done, std::size_t total, std::size_t tokens, bool& shown) {
    if (::isatty(STDERR_FILENO) != 1) {
        return;
    }
    std::cerr << "\rpreloadrun: loading " << tokens << " token(s) onto " << total
              << " module(s): " << done << "/" << total << " done" << std::flush;
    shown = true;
}

// Loads every token onto every usable module; fails when a token could be
// loaded nowhere.
void load_everything(FleetState& fleet, const Loader& loader,
                     const std::vector<std::uint32_t>& modules) {
    auto started = std::chrono::steady_clock::now();
    bool progress_shown = false;
    auto results = loader.load_modules(modules, [&](std::size_t done, std::size_t total) {
        if (std::chrono::steady_clock::now() - started > std::chrono::milliseconds(500)) {
            show_progress(done, total, fleet.tokens().size(), progress_shown);
        }
    });
    if (progress_shown) {
        std::cerr << "\r\033[K" << std::flush;
    }
    std::vector<std::optional<Error>> first_error(fleet.tokens().size());
    std::vector<bool> loaded_somewhere(fleet.tokens().size(), false);
    auto now = unix_time_ms();
    for (auto& result : results) {
        if (!result.error && !result.of_service(fleet.service_instance())) {
            // Loaded on a service that restarted since it was asked: those
            // handles are not the ones of the service the file will name.
            result.error = Error(ErrorCode::unavailable,
                                 "the HSM service restarted while the tokens were loaded");
            result.handles.clear();
        }
        if (!result.error) {
            fleet.set_loaded(result.module, result.handles, now);
            for (const auto& [token, handle] : result.handles) {
                loaded_somewhere[token] = true;
            }
            logger()->info("module {}: {} token(s) loaded in {} ms (generation {})", result.module,
                           result.handles.size(), result.took.count(),
                           fleet.modules().at(result.module).info.generation);
            continue;
        }
        auto token = result.failed_token.value_or(0);
        if (token < first_error.size() && !first_error[token]) {
            first_error[token] = result.error;
        }
        // A wrong passphrase fails on every module alike: the one error below says it.
        auto code = result.error->code();
        // A module that does not hold the token (a real HSM of another
        // token set) is no cause for alarm either.
        const bool not_here =
            code == ErrorCode::not_found && result.error->origin() == Origin::peer;
        auto level = code == ErrorCode::wrong_passphrase || code == ErrorCode::too_many_attempts
                         ? spdlog::level::debug
                     : not_here ? spdlog::level::info
                                : spdlog::level::warn;
        if (not_here) {
            // Trying again changes nothing until the module changes.
            fleet.set_given_up(result.module, true);
        }
        logger()->log(level, "module {}: {}", result.module, result.error->what());
    }
    for (std::size_t t = 0; t < fleet.tokens().size(); ++t) {
        if (loaded_somewhere[t]) {
            continue;
        }
        const auto& error = first_error[t];
        if (error && error->code() == ErrorCode::wrong_passphrase) {
            throw Error(ErrorCode::wrong_passphrase,
                        "wrong passphrase for " + hsm::describe(fleet.tokens()[t]) +
                            " (nothing was loaded; check the passphrase given for it)");
        }
        if (error && error->code() == ErrorCode::too_many_attempts) {
            // The service's message names the token and says when to try again.
            throw Error(ErrorCode::too_many_attempts,
                        std::string(error->what()) + " (nothing was loaded)");
        }
        throw Error(error ? error->code() : ErrorCode::internal,
                    "cannot load " + hsm::describe(fleet.tokens()[t]) + " on any module" +
                        (error ? std::string(": ") + error->what() : std::string()));
    }
}

int run_attached(const Options& options) {
    auto path = std::filesystem::absolute(options.attach);
    auto state = tokens::check(path);
    if (state.status != tokens::Status::live) {
        throw Error(ErrorCode::usage, "refusing to attach to " + path.string() + ": " +
                                          std::string(tokens::to_string(state.status)) + ": " +
                                          state.reason);
    }
    block_supervised_signals();
    logger()->info("attached to {} ({})", path.string(), state.reason);
    EventLoop loop;
    // The service named by --socket, else by HSMFLEET_SOCKET (made absolute
    // either way); with neither, the child's default is preloadrun's.
    std::string socket = options.socket;
    if (socket.empty()) {
        if (const char* inherited = getenv_nonempty(hsm::kSocketVariable)) {
            socket = inherited;
        }
    }
    const auto env = app_environment(path, state.file->high_availability, socket);
    return supervise(loop, child_spec(options, env), options);
}

} // namespace

int run(const Options& options) {
    if (!options.attach.empty()) {
        return run_attached(options);
    }
    // A COMMAND that cannot run fails now (127/126), before anything is
    // loaded; spawning checks again, since the file may change meanwhile.
    if (!options.command.empty()) {
        try {
            resolve_command(options.command.front(), std::getenv("PATH")); // as the child sees it
        } catch (const std::exception& e) {
            std::cerr << "preloadrun: " << e.what() << "\n";
            return exit_status_for_spawn_error(e);
        }
    }
    auto endpoint = endpoint_for(options);
    auto service = hsm::connect(endpoint);
    auto tokens = resolve_tokens(
        options.tokens, options.tokens.empty() ? std::vector<hsm::TokenInfo>{} : service->tokens());
    auto passphrases = collect_passphrases(options, options.tokens, tokens);
    auto listed = wait_while_initialising(*service, options.retry_window);
    // The service closes a connection that stays idle before its process has
    // loaded anything (hsmsim serve --idle-timeout): typed slowly enough, the
    // passphrases outlast it. This is the connection that keeps what is
    // loaded: it must be open, and the first, before anything is.
    if (!service->usable()) {
        service = hsm::connect(endpoint);
        listed = service->modules();
    }
    const Bytes world_id = service->world_id();
    const Bytes instance = service->instance();
    // With no token nothing is loaded, so no connection has to stay open to
    // keep it: the open one becomes the HA loop's event stream now, while the
    // service's thread for it is still awake (one round trip that waits for
    // no wake-up), and the loop starts on it.
    std::unique_ptr<hsm::EventStream> first_stream;
    if (tokens.empty() && options.high_availability) {
        first_stream = hsm::subscribe(std::move(service), endpoint);
    }
    // From here on signals queue for the event loop; no thread exists yet.
    block_supervised_signals();

    tokens::Owner owner{self_identity(), tokens::new_instance_id()};
    auto path = tokens_path(options, owner.instance);
    tokens::Publisher publisher(path, {group_id(options.group)});
    if (const auto& stale = publisher.taken_over()) {
        logger()->info("taking over stale tokens file {}: {}", path.string(), stale->reason);
    }

    FleetState fleet(world_id, tokens, options.high_availability);
    fleet.set_service_instance(instance);
    auto modules = usable_modules(fleet, listed);
    // `service` stays open until run() returns, after `unload` has run: the
    // service unloads what a process loaded once its last connection closes
    // (with no token, it becomes the event stream instead).
    auto loader = std::make_shared<Loader>([endpoint] { return hsm::connect(endpoint); }, tokens,
                                           std::move(passphrases));
    UnloadAtExit unload(*loader, fleet);
    load_everything(fleet, *loader, modules);
    if (!options.high_availability) {
        loader->forget_passphrases(); // nothing loads again; HA keeps them for the reloads
    }

    auto publish = [&] {
        auto file = fleet.render(owner);
        publisher.publish(file);
    };
    publish();
    logger()->info("tokens file {} published: {} token(s) on {} module(s){}", path.string(),
                   tokens.size(), modules.size(),
                   options.high_availability ? ", reloading on module changes" : " (--no-ha)");

    EventLoop loop;
    std::unique_ptr<HaLoop> ha;
    if (options.high_availability) {
        ha = std::make_unique<HaLoop>(loop, ha_seams(endpoint, std::move(first_stream)), fleet,
                                      loader, publish, options.retry_window);
        ha->start();
    }
    // The application talks to the service the tokens were loaded on.
    const auto env = app_environment(path, options.high_availability, endpoint.socket_path);
    if (options.command.empty() && tokens.empty()) {
        // A bare `preloadrun` is more often a slip than token-less service
        // mode: said on stderr, while stdout keeps only the shell lines.
        logger()->warn("no token given (-s or -c): nothing was loaded; the tokens file serves "
                       "module-protected keys only{}, until SIGTERM or SIGINT (Ctrl-C)",
                       options.high_availability ? " (reloaded onto HSMs that are cleared or join)"
                                                 : "");
    }
    int status = options.command.empty() ? run_service_mode(loop, env)
                                         : supervise(loop, child_spec(options, env), options);
    ha.reset();
    // Remove the tokens file and release the lock first: nothing may use the
    // handles while they are being unloaded.
    publisher.remove();
    return status;
}

} // namespace preloadrun::supervisor
