// ha_probe: the stopwatch of bench_ha_reload.py. Every line it prints starts
// with a CLOCK_MONOTONIC timestamp in nanoseconds, taken when it saw the thing:
//
//   ha_probe watch --socket S --tokens-file F
//     Subscribes to hsmsim's module events and watches F's directory with
//     inotify (the publisher renames a temporary file over F). Prints
//       READY <ns>
//       EVENT <ns> <module> <state> <generation> <previous state> <previous generation>
//       PUBLISH <ns> <the new tokens file, as one line of JSON>
//     until its standard input closes (or the service goes away: exit 1).
//
//   ha_probe load --socket S --module N --passphrase-file P --reps R HASH...
//     The baseline: what preloadrun's loader does for one module, directly:
//     connect, load every token HASH onto module N (timed), then unload them
//     (not timed); R times, or with --reps 0 once per line read on standard
//     input until it closes (so that the caller interleaves the baseline with
//     what it measures). Prints
//       LOAD <ns taken>
//     per repetition.
//
// Exit status: 0, 1 when something broke, 2 bad usage.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/passphrase.hpp"
#include "preloadrun/hsm/service.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sstream>
#include <string>
#include <sys/inotify.h>
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
        << "       ha_probe load --socket S --module N --passphrase-file P --reps R HASH...\n";
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

int load(const std::string& socket, std::uint32_t module, const std::string& passfile, int reps,
         const std::vector<std::string>& hashes) {
    hsm::Endpoint endpoint;
    endpoint.socket_path = socket;
    endpoint.client_name = "ha_probe";
    auto passphrase = read_passphrase_file(passfile);
    std::vector<Bytes> tokens;
    for (const auto& h : hashes) {
        tokens.push_back(from_hex(h));
    }
    for (int r = 0; reps == 0 || r < reps; ++r) {
        if (reps == 0) {
            std::string line;
            if (!std::getline(std::cin, line)) {
                break;
            }
        }
        std::vector<hsm::ObjectHandle> handles;
        auto start = now_ns();
        auto service = hsm::connect(endpoint);
        for (const auto& token : tokens) {
            handles.push_back(service->load_token(module, token, passphrase));
        }
        auto took = now_ns() - start;
        for (auto handle : handles) {
            service->unload(module, handle);
        }
        std::printf("LOAD %lld\n", static_cast<long long>(took));
        std::fflush(stdout);
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage("missing mode");
    }
    std::string mode = argv[1];
    std::string socket;
    std::string tokens_file;
    std::string passfile;
    std::uint32_t module = 0;
    int reps = 1;
    std::vector<std::string> rest;
    for (int i = 2; i < argc; ++i) {
        std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage(arg + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--socket") {
            socket = value();
        } else if (arg == "--tokens-file") {
            tokens_file = value();
        } else if (arg == "--passphrase-file") {
            passfile = value();
        } else if (arg == "--module") {
            module = static_cast<std::uint32_t>(std::stoul(value()));
        } else if (arg == "--reps") {
            reps = std::stoi(value());
        } else if (!arg.empty() && arg[0] == '-') {
            usage("unknown option " + arg);
        } else {
            rest.push_back(arg);
        }
    }
    if (socket.empty()) {
        usage("--socket is required");
    }
    try {
        if (mode == "watch") {
            if (tokens_file.empty()) {
                usage("watch needs --tokens-file");
            }
            return watch(socket, std::filesystem::absolute(tokens_file));
        }
        if (mode == "load") {
            if (module == 0 || passfile.empty() || rest.empty()) {
                usage("load needs --module, --passphrase-file and at least one HASH");
            }
            return load(socket, module, passfile, reps, rest);
        }
    } catch (const std::exception& e) {
        std::cerr << "ha_probe: " << e.what() << "\n";
        return 1;
    }
    usage("unknown mode " + mode);
}
