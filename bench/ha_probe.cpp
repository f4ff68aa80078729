// ha_probe: the stopwatch of bench_ha_reload.py and bench_fleet_reload.py.
// Every line it prints starts with a CLOCK_MONOTONIC timestamp in nanoseconds
// (or a duration in nanoseconds), taken when it saw the thing:
//
//   ha_probe watch --socket S --tokens-file F
//     Subscribes to hsmsim's module events and watches F's directory with
//     inotify (the publisher renames a temporary file over F). Prints
//       READY <ns>
//       EVENT <ns> <module> <state> <generation> <previous state> <previous generation>
//       PUBLISH <ns> <the new tokens file, as one line of JSON>
//     until its standard input closes (or the service goes away: exit 1).
//
//   ha_probe load --socket S (--module N | --modules LIST) --passphrase-file P --reps R
//                 [--keys-file K] HASH...
//     The baseline: what preloadrun's loader does, directly: connect, load
//     every token HASH onto module N (timed), then unload them (not timed);
//     R times, or with --reps 0 once per line read on standard input until it
//     closes (so that the caller interleaves the baseline with what it
//     measures). With --modules (1-32, or 1,2,5) every module of LIST at once,
//     one thread and connection each, as preloadrun does after a clear of
//     them all. With --keys-file (one key ident a line, keys protected by the
//     first HASH), each module's thread then loads those keys too, one request
//     each, as the PKCS#11 module reloads keys. Prints per repetition
//       LOAD <ns until every token was loaded> <ns until every key was loaded>
//     (wall times from the start, over all the modules; the same figure twice
//     without --keys-file).
//
//   ha_probe keygen --socket S --passphrase-file P --count N [--first I] HASH
//     Setup, not timed for a result: generates N persistent EC P-256 keys
//     protected by token HASH (labels k<I>..k<I+N-1>, CKA_ID the 4-byte
//     big-endian number) over one connection, on the first usable module.
//     hsmsim's CLI makes one key per call; this is the bulk way. Prints
//       KEYGEN <count> <ns taken>
//
//   ha_probe clear --admin-socket A --modules LIST
//     Clears every module of LIST at once, as near as hsmsim allows (it has no
//     fleet-wide clear): one admin connection and thread per module, all
//     connected first, then released together. Prints
//       CLEAR <ns before the first request> <ns after the last answer>
//
// Exit status: 0, 1 when something broke, 2 bad usage.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/passphrase.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/inotify.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace {

using namespace preloadrun;

std::int64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

[[noreturn]] void usage(const std::string& why) {
    std::cerr
        << "ha_probe: " << why << "\n"
        << "usage: ha_probe watch --socket S --tokens-file F\n"
        << "       ha_probe load --socket S (--module N | --modules LIST) --passphrase-file P\n"
        << "                     --reps R [--keys-file K] HASH...\n"
        << "       ha_probe keygen --socket S --passphrase-file P --count N [--first I] HASH\n"
        << "       ha_probe clear --admin-socket A --modules LIST\n";
    std::exit(2);
}

int watch(const std::string& socket, const std::filesystem::path& file) {
    hsm::Endpoint endpoint;
    endpoint.socket_path = socket;
    endpoint.client_name = "ha_probe";
    auto stream = hsm::subscribe(endpoint);

    int ino = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (ino < 0) {
        std::perror("ha_probe: inotify_init1");
        return 1;
    }
    auto dir = file.parent_path();
    auto name = file.filename().string();
    if (::inotify_add_watch(ino, dir.c_str(), IN_MOVED_TO | IN_CLOSE_WRITE) < 0) {
        std::perror("ha_probe: inotify_add_watch");
        return 1;
    }
    std::printf("READY %lld\n", static_cast<long long>(now_ns()));
    std::fflush(stdout);

    std::vector<char> buffer(64 * 1024);
    for (;;) {
        pollfd fds[3] = {{stream->fd(), POLLIN, 0}, {ino, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        if (::poll(fds, 3, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            std::perror("ha_probe: poll");
            return 1;
        }
        if (fds[0].revents != 0) {
            try {
                while (auto event = stream->next(std::chrono::milliseconds(0))) {
                    auto stamp = now_ns();
                    std::printf("EVENT %lld %u %s %llu %s %llu\n", static_cast<long long>(stamp),
                                event->module.number,
                                std::string(hsm::to_string(event->module.state)).c_str(),
                                static_cast<unsigned long long>(event->module.generation),
                                std::string(hsm::to_string(event->previous_state)).c_str(),
                                static_cast<unsigned long long>(event->previous_generation));
                }
            } catch (const std::exception& e) {
                std::cerr << "ha_probe: events: " << e.what() << "\n";
                return 1;
            }
        }
        if (fds[1].revents != 0) {
            bool published = false;
            std::int64_t stamp = 0;
            for (;;) {
                auto n = ::read(ino, buffer.data(), buffer.size());
                if (n <= 0) {
                    break;
                }
                if (stamp == 0) {
                    stamp = now_ns();
                }
                for (char* p = buffer.data(); p < buffer.data() + n;) {
                    auto* ev = reinterpret_cast<inotify_event*>(p);
                    if (ev->len > 0 && name == ev->name) {
                        published = true;
                    }
                    p += sizeof(inotify_event) + ev->len;
                }
            }
            if (published) {
                std::ifstream in(file);
                std::stringstream text;
                text << in.rdbuf();
                try {
                    auto json = nlohmann::json::parse(text.str());
                    std::printf("PUBLISH %lld %s\n", static_cast<long long>(stamp),
                                json.dump().c_str());
                } catch (const std::exception&) {
                    // removed or not ours: ignore
                }
            }
        }
        std::fflush(stdout);
        if (fds[2].revents != 0) {
            char c;
            if (::read(STDIN_FILENO, &c, 1) <= 0) {
                return 0;
            }
        }
    }
}

// "1-32", "1,2,5" or "3" -> module numbers.
std::vector<std::uint32_t> parse_modules(const std::string& text) {
    std::vector<std::uint32_t> out;
    std::stringstream in(text);
    std::string part;
    while (std::getline(in, part, ',')) {
        auto dash = part.find('-');
        auto first = static_cast<std::uint32_t>(std::stoul(part.substr(0, dash)));
        auto last = dash == std::string::npos
                        ? first
                        : static_cast<std::uint32_t>(std::stoul(part.substr(dash + 1)));
        for (auto m = first; m <= last && m != 0; ++m) {
            out.push_back(m);
        }
    }
    return out;
}

struct LoadWork {
    hsm::Endpoint endpoint;
    SecureBuffer passphrase;
    std::vector<Bytes> tokens;
    std::vector<std::string> keys; // protected by tokens[0]
};

struct LoadTimes {
    std::int64_t tokens_done = 0; // CLOCK_MONOTONIC ns
    std::int64_t keys_done = 0;
    std::string error;
};

// One module: connect, load the tokens (then the keys), unload (not timed).
void load_module(const LoadWork& work, std::uint32_t module, LoadTimes& times) {
    try {
        std::vector<hsm::ObjectHandle> handles;
        auto service = hsm::connect(work.endpoint);
        for (const auto& token : work.tokens) {
            handles.push_back(service->load_token(module, token, work.passphrase));
        }
        times.tokens_done = now_ns();
        const auto token_handle = handles.front();
        for (const auto& ident : work.keys) {
            handles.push_back(service->load_key(module, ident, token_handle));
        }
        times.keys_done = now_ns();
        for (auto it = handles.rbegin(); it != handles.rend(); ++it) {
            service->unload(module, *it);
        }
    } catch (const std::exception& e) {
        times.error = e.what();
    }
}

int load(const LoadWork& work, const std::vector<std::uint32_t>& modules, int reps) {
    for (int r = 0; reps == 0 || r < reps; ++r) {
        if (reps == 0) {
            std::string line;
            if (!std::getline(std::cin, line)) {
                break;
            }
        }
        std::vector<LoadTimes> times(modules.size());
        auto start = now_ns();
        if (modules.size() == 1) {
            load_module(work, modules.front(), times.front());
        } else {
            std::vector<std::thread> threads;
            for (std::size_t i = 0; i < modules.size(); ++i) {
                threads.emplace_back([&, i] { load_module(work, modules[i], times[i]); });
            }
            for (auto& t : threads) {
                t.join();
            }
        }
        std::int64_t tokens_done = start;
        std::int64_t keys_done = start;
        for (std::size_t i = 0; i < modules.size(); ++i) {
            if (!times[i].error.empty()) {
                std::cerr << "ha_probe: module " << modules[i] << ": " << times[i].error << "\n";
                return 1;
            }
            tokens_done = std::max(tokens_done, times[i].tokens_done);
            keys_done = std::max(keys_done, times[i].keys_done);
        }
        std::printf("LOAD %lld %lld\n", static_cast<long long>(tokens_done - start),
                    static_cast<long long>(keys_done - start));
        std::fflush(stdout);
    }
    return 0;
}

int keygen(const LoadWork& work, std::uint32_t count, std::uint32_t first) {
    auto service = hsm::connect(work.endpoint);
    std::uint32_t module = 0;
    for (const auto& m : service->modules()) {
        if (m.state == hsm::ModuleState::usable) {
            module = m.number;
            break;
        }
    }
    if (module == 0) {
        std::cerr << "ha_probe: no usable module\n";
        return 1;
    }
    auto start = now_ns();
    hsm::KeySpec spec;
    spec.type = hsm::KeyType::ec_p256;
    spec.persistent = true;
    spec.token_handle = service->load_token(module, work.tokens.front(), work.passphrase);
    for (std::uint32_t i = first; i < first + count; ++i) {
        spec.label = "k" + std::to_string(i);
        spec.id = Bytes{static_cast<std::uint8_t>(i >> 24), static_cast<std::uint8_t>(i >> 16),
                        static_cast<std::uint8_t>(i >> 8), static_cast<std::uint8_t>(i)};
        service->unload(module, service->generate_key(module, spec).handle);
    }
    service->unload(module, spec.token_handle);
    std::printf("KEYGEN %u %lld\n", count, static_cast<long long>(now_ns() - start));
    return 0;
}

int clear(const std::string& admin_socket, const std::vector<std::uint32_t>& modules) {
    hsm::Endpoint endpoint;
    endpoint.socket_path = admin_socket;
    endpoint.client_name = "ha_probe";
    // One admin connection per module, all connected before the first clear.
    std::vector<std::unique_ptr<hsm::SimAdmin>> admins;
    for (std::size_t i = 0; i < modules.size(); ++i) {
        admins.push_back(std::make_unique<hsm::SimAdmin>(endpoint));
    }
    std::mutex mutex;
    std::condition_variable go;
    bool started = false;
    std::vector<std::string> errors(modules.size());
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < modules.size(); ++i) {
        threads.emplace_back([&, i] {
            {
                std::unique_lock lock(mutex);
                go.wait(lock, [&] { return started; });
            }
            try {
                admins[i]->control(modules[i], hsm::ModuleAction::clear);
            } catch (const std::exception& e) {
                errors[i] = e.what();
            }
        });
    }
    std::int64_t start = 0;
    {
        std::lock_guard lock(mutex);
        started = true;
        start = now_ns();
    }
    go.notify_all();
    for (auto& t : threads) {
        t.join();
    }
    auto done = now_ns();
    for (std::size_t i = 0; i < modules.size(); ++i) {
        if (!errors[i].empty()) {
            std::cerr << "ha_probe: clear module " << modules[i] << ": " << errors[i] << "\n";
            return 1;
        }
    }
    std::printf("CLEAR %lld %lld\n", static_cast<long long>(start), static_cast<long long>(done));
    return 0;
}

struct Options {
    std::string mode;
    std::string socket;
    std::string admin_socket;
    std::string tokens_file;
    std::string passfile;
    std::string keys_file;
    std::vector<std::uint32_t> modules;
    int reps = 1;
    std::uint32_t count = 0;
    std::uint32_t first = 0;
    std::vector<std::string> rest;
};

Options parse(int argc, char** argv) {
    Options o;
    o.mode = argv[1];
    for (int i = 2; i < argc; ++i) {
        std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage(arg + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--socket") {
            o.socket = value();
        } else if (arg == "--admin-socket") {
            o.admin_socket = value();
        } else if (arg == "--tokens-file") {
            o.tokens_file = value();
        } else if (arg == "--passphrase-file") {
            o.passfile = value();
        } else if (arg == "--keys-file") {
            o.keys_file = value();
        } else if (arg == "--module" || arg == "--modules") {
            o.modules = parse_modules(value());
        } else if (arg == "--reps") {
            o.reps = std::stoi(value());
        } else if (arg == "--count") {
            o.count = static_cast<std::uint32_t>(std::stoul(value()));
        } else if (arg == "--first") {
            o.first = static_cast<std::uint32_t>(std::stoul(value()));
        } else if (!arg.empty() && arg[0] == '-') {
            usage("unknown option " + arg);
        } else {
            o.rest.push_back(arg);
        }
    }
    return o;
}

LoadWork load_work(const Options& o) {
    LoadWork work;
    work.endpoint.socket_path = o.socket;
    work.endpoint.client_name = "ha_probe";
    work.passphrase = read_passphrase_file(o.passfile);
    for (const auto& h : o.rest) {
        work.tokens.push_back(from_hex(h));
    }
    if (!o.keys_file.empty()) {
        std::ifstream in(o.keys_file);
        if (!in) {
            throw std::runtime_error("cannot read " + o.keys_file);
        }
        for (std::string line; std::getline(in, line);) {
            if (!line.empty()) {
                work.keys.push_back(line);
            }
        }
    }
    return work;
}

int run(const Options& o) {
    if (o.mode == "clear") {
        if (o.admin_socket.empty() || o.modules.empty()) {
            usage("clear needs --admin-socket and --modules");
        }
        return clear(o.admin_socket, o.modules);
    }
    if (o.socket.empty()) {
        usage("--socket is required");
    }
    if (o.mode == "watch") {
        if (o.tokens_file.empty()) {
            usage("watch needs --tokens-file");
        }
        return watch(o.socket, std::filesystem::absolute(o.tokens_file));
    }
    if (o.mode == "load") {
        if (o.modules.empty() || o.passfile.empty() || o.rest.empty()) {
            usage("load needs --module(s), --passphrase-file and at least one HASH");
        }
        return load(load_work(o), o.modules, o.reps);
    }
    if (o.mode == "keygen") {
        if (o.count == 0 || o.passfile.empty() || o.rest.size() != 1) {
            usage("keygen needs --count, --passphrase-file and one HASH");
        }
        return keygen(load_work(o), o.count, o.first);
    }
    usage("unknown mode " + o.mode);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage("missing mode");
    }
    Options options;
    try {
        options = parse(argc, argv);
    } catch (const std::logic_error& e) {
        usage(std::string("bad number: ") + e.what());
    }
    try {
        return run(options);
    } catch (const std::exception& e) {
        std::cerr << "ha_probe: " << e.what() << "\n";
        return 1;
    }
}
