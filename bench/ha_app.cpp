// ha_app: the application of bench_ha_reload.py --first-signature and of
// bench_fleet_reload.py. It uses libpreloadrun-pkcs11.so as an application
// does (dlopen; its environment, set by the caller, says CKNFAST_RELOAD_KEYS,
// CKNFAST_LOADSHARING, NFAST_NFKM_TOKENSFILE and HSMSIM_SOCKET), logs in to a
// softcard that preloadrun has loaded (any PIN) and signs (CKM_ECDSA, one
// signature at a time, one thread). The PKCS#11 module offers no slot per HSM:
// it picks the module itself, in turn. So that the caller knows which module
// served what, ha_app reads hsmsim's module listing (state, generation,
// operation counter, objects held) over a connection of its own. Every line it
// prints starts with a CLOCK_MONOTONIC timestamp in nanoseconds, or a duration
// in nanoseconds.
//
//   ha_app first --pkcs11 LIB --socket S --token LABEL --module N
//     Signs with the token's first private key in a loop and reads the listing
//     before and after every signature (the reading after one is the reading
//     before the next): when module N's operation counter grew and its
//     generation stayed the same, that signature was served by N at that
//     generation (hsmsim counts an operation before it answers, and nothing
//     else does cryptography on N: preloadrun's and ha_probe's loads are
//     management operations, not counted). Prints
//       READY <ns>                      once a signature succeeded
//       FIRST <ns> <generation> <signatures> <failed>
//     for each generation of module N, the first signature N served at it
//     (ns: when that C_Sign returned); until standard input closes.
//
//   ha_app fleet --pkcs11 LIB --socket S --token LABEL --keys K
//     Finds the token's K private keys, then obeys lines of standard input:
//       warm
//         every key used on every module: sweeps (each key signed M times in a
//         row, M the number of modules: the round robin gives it each module
//         once) until the listing shows every module holding at least K+1
//         objects (the application's K keys and preloadrun's token), then one
//         sweep more, timed: what a sweep costs with every key in place. Prints
//           WARM <ns taken> <signatures> <ns of that last sweep>
//       run one|sweep TIMEOUT_MS
//         notes every module's generation, prints ARMED <ns>, and signs in a
//         loop: "one", always with the first key (the application's calls are
//         what makes the PKCS#11 module check the tokens file and reload the
//         keys in use); "sweep", every key M times in a row, key after key (an
//         application that uses all its keys everywhere: keys not reloaded come
//         back when used). After a signature, at most every millisecond, it
//         reads the listing; ready is the first reading in which every module
//         has a new generation, is usable and holds at least K+1 objects, and
//         the first signature after that reading succeeds. Prints
//           READY <ns of that reading> <ns that signature returned> <signatures> <failed>
//         or, when TIMEOUT_MS passed first,
//           TIMEOUT <ns> <modules ready> <fewest objects on a module> <signatures> <failed>
//     until standard input closes.
//
// Exit status: 0, 1 when something broke, 2 bad usage.

#include "pkcs11_bench.hpp"
#include "preloadrun/hsm/service.hpp"

#include <climits>
#include <cstdint>
#include <ctime>
#include <map>
#include <poll.h>

namespace {

using namespace preloadrun;
using pkcs11_bench::Module;

std::int64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "ha_app: " << why << "\n"
              << "usage: ha_app first --pkcs11 LIB --socket S --token LABEL --module N\n"
              << "       ha_app fleet --pkcs11 LIB --socket S --token LABEL --keys K\n";
    std::exit(2);
}

void say(const std::string& line) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
}

std::string num(std::int64_t v) {
    return std::to_string(v);
}

// True once standard input is at its end (without blocking).
bool stdin_closed() {
    pollfd fd{STDIN_FILENO, POLLIN, 0};
    if (::poll(&fd, 1, 0) <= 0) {
        return false;
    }
    char c;
    return ::read(STDIN_FILENO, &c, 1) <= 0;
}

struct Session {
    Module lib;
    CK_SESSION_HANDLE session = 0;
    std::vector<CK_OBJECT_HANDLE> keys;
    std::int64_t signatures = 0;
    std::int64_t failed = 0;

    Session(const std::string& path, const std::string& token) : lib(path) {
        session = lib.open(lib.slot_of(token));
        lib.login(session, "any PIN: preloadrun has logged in");
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}};
        Module::check(lib.f->C_FindObjectsInit(session, t, 1), "C_FindObjectsInit");
        for (;;) {
            CK_OBJECT_HANDLE batch[1024];
            CK_ULONG n = 0;
            Module::check(lib.f->C_FindObjects(session, batch, 1024, &n), "C_FindObjects");
            keys.insert(keys.end(), batch, batch + n);
            if (n == 0) {
                break;
            }
        }
        Module::check(lib.f->C_FindObjectsFinal(session), "C_FindObjectsFinal");
        if (keys.empty()) {
            throw pkcs11_bench::Broken("no private key on token " + token);
        }
    }

    // One signature; counts it. True when it succeeded.
    bool sign(std::size_t key) {
        ++signatures;
        if (lib.sign_once(session, keys[key]) == CKR_OK) {
            return true;
        }
        ++failed;
        return false;
    }
};

std::map<std::uint32_t, hsm::ModuleInfo> listing(hsm::Service& service) {
    std::map<std::uint32_t, hsm::ModuleInfo> out;
    for (auto& m : service.modules()) {
        out[m.number] = std::move(m);
    }
    return out;
}

int first(Session& app, hsm::Service& service, std::uint32_t module) {
    while (!app.sign(0)) {
        if (app.signatures > 1000) {
            throw pkcs11_bench::Broken("no signature succeeded");
        }
    }
    say("READY " + num(now_ns()));
    auto before = listing(service);
    if (!before.count(module)) {
        throw pkcs11_bench::Broken("no module " + std::to_string(module));
    }
    std::uint64_t ops = before[module].ops;
    std::uint64_t generation = before[module].generation;
    std::uint64_t reported = generation; // the generation whose first signature is out
    while (!stdin_closed()) {
        const bool ok = app.sign(0);
        const auto signed_at = now_ns();
        const auto m = listing(service)[module];
        // Served by `module` at m.generation: its counter grew, and no clear
        // came between the readings before and after the signature.
        if (ok && m.ops != ops && m.generation == generation && m.generation != reported) {
            reported = m.generation;
            say("FIRST " + num(signed_at) + " " + num(static_cast<std::int64_t>(m.generation)) +
                " " + num(app.signatures) + " " + num(app.failed));
        }
        ops = m.ops;
        generation = m.generation;
    }
    return 0;
}

struct Fleet {
    Session& app;
    hsm::Service& service;
    std::size_t modules = 0;
    std::size_t next = 0; // position in the sweep: key next / modules

    // The next signature of a sweep: each key `modules` times in a row.
    bool sweep_step() {
        const std::size_t key = (next / modules) % app.keys.size();
        next = (next + 1) % (modules * app.keys.size());
        return app.sign(key);
    }

    // Modules that hold at least K+1 objects (and are at a generation other
    // than in `old`, when given); the fewest objects held.
    std::pair<std::size_t, std::uint32_t>
    holding(const std::map<std::uint32_t, hsm::ModuleInfo>& now,
            const std::map<std::uint32_t, hsm::ModuleInfo>* old) const {
        std::size_t ready = 0;
        std::uint32_t fewest = UINT32_MAX;
        for (const auto& [number, m] : now) {
            const bool fresh = old == nullptr || (old->count(number) != 0 &&
                                                  old->at(number).generation != m.generation);
            fewest = std::min(fewest, m.objects);
            if (fresh && m.state == hsm::ModuleState::usable && m.objects > app.keys.size()) {
                ++ready;
            }
        }
        return {ready, fewest};
    }

    void warm() {
        const auto start = now_ns();
        const auto signatures = app.signatures;
        for (int round = 0;; ++round) {
            for (std::size_t i = 0; i < modules * app.keys.size(); ++i) {
                sweep_step();
            }
            const auto [ready, fewest] = holding(listing(service), nullptr);
            if (ready == modules) {
                break;
            }
            if (round == 5) {
                throw pkcs11_bench::Broken("warm-up: after 6 sweeps, " + std::to_string(ready) +
                                           " of " + std::to_string(modules) +
                                           " modules hold every key (fewest objects " +
                                           std::to_string(fewest) + ")");
            }
        }
        const auto sweep_start = now_ns();
        for (std::size_t i = 0; i < modules * app.keys.size(); ++i) {
            sweep_step();
        }
        const auto done = now_ns();
        say("WARM " + num(done - start) + " " + num(app.signatures - signatures) + " " +
            num(done - sweep_start));
    }

    void run(bool sweep, std::int64_t timeout_ms) {
        const auto old = listing(service);
        const auto start = now_ns();
        const auto signatures = app.signatures;
        const auto failed = app.failed;
        say("ARMED " + num(start));
        std::int64_t listed = 0;
        std::int64_t ready_at = 0;
        for (;;) {
            const bool ok = sweep ? sweep_step() : app.sign(0);
            const auto now = now_ns();
            if (ready_at != 0 && ok) {
                say("READY " + num(ready_at) + " " + num(now) + " " +
                    num(app.signatures - signatures) + " " + num(app.failed - failed));
                return;
            }
            if (ready_at != 0 || now - listed < 1000000) {
                continue;
            }
            const auto [ready, fewest] = holding(listing(service), &old);
            listed = now_ns();
            if (ready == modules) {
                ready_at = listed;
            } else if (listed - start > timeout_ms * 1000000) {
                say("TIMEOUT " + num(listed) + " " + num(static_cast<std::int64_t>(ready)) + " " +
                    num(fewest) + " " + num(app.signatures - signatures) + " " +
                    num(app.failed - failed));
                return;
            }
        }
    }
};

int fleet(Session& app, hsm::Service& service, std::size_t keys) {
    if (app.keys.size() != keys) {
        throw pkcs11_bench::Broken("found " + std::to_string(app.keys.size()) +
                                   " private keys, expected " + std::to_string(keys));
    }
    Fleet f{app, service, listing(service).size()};
    for (std::string line; std::getline(std::cin, line);) {
        std::istringstream in(line);
        std::string command;
        std::string workload;
        std::int64_t timeout_ms = 0;
        in >> command >> workload >> timeout_ms;
        if (command == "warm") {
            f.warm();
        } else if (command == "run" && (workload == "one" || workload == "sweep") &&
                   timeout_ms > 0) {
            f.run(workload == "sweep", timeout_ms);
        } else {
            throw pkcs11_bench::Broken("unknown command: " + line);
        }
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage("missing mode");
    }
    const std::string mode = argv[1];
    std::map<std::string, std::string> opt;
    for (int i = 2; i < argc; i += 2) {
        const std::string arg = argv[i];
        if (arg != "--pkcs11" && arg != "--socket" && arg != "--token" && arg != "--module" &&
            arg != "--keys") {
            usage("unknown option " + arg);
        }
        if (i + 1 >= argc) {
            usage(arg + " needs a value");
        }
        opt[arg] = argv[i + 1];
    }
    for (const char* required : {"--pkcs11", "--socket", "--token"}) {
        if (opt[required].empty()) {
            usage(std::string(required) + " is required");
        }
    }
    const std::string count = mode == "first" ? "--module" : "--keys";
    if ((mode != "first" && mode != "fleet") || opt[count].empty() ||
        opt[count].find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(opt[count]) == 0) {
        usage(mode == "first" || mode == "fleet" ? count + " is required (a number > 0)"
                                                 : "unknown mode " + mode);
    }
    try {
        hsm::Endpoint endpoint;
        endpoint.socket_path = opt["--socket"];
        endpoint.client_name = "ha_app";
        auto service = hsm::connect(endpoint);
        Session app(opt["--pkcs11"], opt["--token"]);
        if (mode == "first") {
            return first(app, *service, static_cast<std::uint32_t>(std::stoul(opt[count])));
        }
        return fleet(app, *service, std::stoul(opt[count]));
    } catch (const std::exception& e) {
        std::cerr << "ha_app: " << e.what() << "\n";
        return 1;
    }
}
