// supervise-driver: runs COMMAND under the supervision core exactly as
// preloadrun will (without tokens), for the pty tests until the CLI exists.
//
//   supervise-driver [--subreaper] [--log-level LEVEL] -- COMMAND [ARG...]
//
// Exit status as preloadrun's: the child's, 128+N, 126, 127; 125 for its own
// failures. The log level can also come from SUPERVISE_DRIVER_LOG.

#include "core/reaper.hpp"
#include "core/supervisor.hpp"
#include "preloadrun/common/log.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace sv = preloadrun::supervisor;

int main(int argc, char** argv) {
    sv::block_supervised_signals(); // before anything could start a thread
    try {
        bool subreaper = false;
        const char* level = std::getenv("SUPERVISE_DRIVER_LOG");
        sv::ChildSpec spec;
        int i = 1;
        for (; i < argc; ++i) {
            const std::string arg = argv[i];
            if (arg == "--") {
                ++i;
                break;
            }
            if (arg == "--subreaper") {
                subreaper = true;
            } else if (arg == "--log-level" && i + 1 < argc) {
                level = argv[++i];
            } else {
                std::fprintf(stderr, "usage: supervise-driver [--subreaper] [--log-level L] -- "
                                     "COMMAND [ARG...]\n");
                return sv::kExitPreloadrunFailed;
            }
        }
        for (; i < argc; ++i) {
            spec.argv.emplace_back(argv[i]);
        }
        if (spec.argv.empty()) {
            std::fprintf(stderr, "preloadrun: no command given\n");
            return sv::kExitPreloadrunFailed;
        }
        preloadrun::log::Config config;
        config.program = "preloadrun";
        if (level != nullptr && *level != '\0') {
            config.level = preloadrun::log::parse_level(level);
        }
        preloadrun::log::setup(config);
        if (subreaper) {
            sv::become_subreaper();
        }

        sv::EventLoop loop;
        sv::Supervisor supervisor(loop);
        try {
            supervisor.start(spec);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "preloadrun: %s\n", e.what());
            return sv::exit_status_for_spawn_error(e);
        }
        return supervisor.wait();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "preloadrun: %s\n", e.what());
        return sv::kExitPreloadrunFailed;
    }
}
