#include "inspect.hpp"

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/tokens/environment.hpp"
#include "preloadrun/tokens/liveness.hpp"

#include <cstdlib>
#include <ctime>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace preloadrun::supervisor {

namespace {

std::string local_time(std::int64_t unix_ms) {
    if (unix_ms == 0) {
        return "never";
    }
    std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    ::localtime_r(&seconds, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm);
    return text;
}

std::string pad(std::string text, std::size_t width) {
    if (text.size() < width) {
        text.append(width - text.size(), ' ');
    }
    return text;
}

void print_human(const std::string& path, const tokens::Liveness& state) {
    std::cout << "tokens file: " << path << "\n";
    std::cout << "status:      " << tokens::to_string(state.status) << " (" << state.reason
              << ")\n";
    if (!state.file) {
        return;
    }
    const auto& f = *state.file;
    std::cout << "owner:       preloadrun pid " << f.owner.process.pid << " on "
              << f.owner.process.hostname << ", instance " << f.owner.instance << "\n";
    std::cout << "generation:  " << f.generation << "\n";
    std::cout << "mode:        "
              << (f.high_availability ? "high availability (tokens reloaded on module changes)"
                                      : "load once (--no-ha)")
              << "\n";
    std::cout << "world:       " << f.world << "\n";
    std::cout << "service:     instance " << f.service_instance << "\n";
    std::cout << "modules:\n";
    std::cout << "  " << pad("MODULE", 8) << pad("ESN", 16) << pad("STATE", 14)
              << pad("GENERATION", 12) << pad("RELOADS", 9) << "LAST RELOAD\n";
    for (const auto& m : f.modules) {
        std::cout << "  " << pad(std::to_string(m.number), 8) << pad(m.esn, 16)
                  << pad(std::string(tokens::to_string(m.state)), 14)
                  << pad(std::to_string(m.generation), 12) << pad(std::to_string(m.reloads), 9)
                  << local_time(m.last_reload_ms)
                  << (m.given_up ? "  (given up: retry window expired)" : "") << "\n";
    }
    std::cout << "tokens:" << (f.tokens.empty() ? " none (module-protected keys only)" : "")
              << "\n";
    for (const auto& t : f.tokens) {
        std::cout << "  " << tokens::to_string(t.type) << " " << t.name << " (" << t.hash << "):";
        if (t.loaded.empty()) {
            std::cout << " not loaded on any module";
        }
        for (std::size_t i = 0; i < t.loaded.size(); ++i) {
            std::cout << (i == 0 ? " " : ", ") << "module " << t.loaded[i].module << " handle "
                      << t.loaded[i].handle;
        }
        std::cout << "\n";
    }
}

int exit_status_for(tokens::Status status) {
    switch (status) {
    case tokens::Status::live:
        return kCheckLive;
    case tokens::Status::unknown:
        return kCheckUnknown;
    default:
        return kCheckNotLive;
    }
}

} // namespace

std::string tokens_file_argument(const std::string& given) {
    if (!given.empty()) {
        return given;
    }
    if (const char* env = getenv_nonempty(tokens::env::kTokensFile)) {
        return env;
    }
    throw Error(ErrorCode::usage,
                std::string("no tokens file: give FILE or set ") + tokens::env::kTokensFile);
}

int check_command(const std::string& path) {
    auto state = tokens::check(path);
    if (state.status == tokens::Status::live) {
        std::cout << path << ": live, " << state.reason << "\n";
    } else if (state.status == tokens::Status::unknown) {
        std::cerr << "preloadrun: " << path << ": cannot check: " << state.reason << "\n";
    } else {
        std::cerr << "preloadrun: " << path << ": not live: " << tokens::to_string(state.status)
                  << ": " << state.reason << "\n";
    }
    return exit_status_for(state.status);
}

int status_command(const std::string& path, bool json) {
    auto state = tokens::check(path);
    if (json) {
        nlohmann::json out = {{"path", path},
                              {"status", tokens::to_string(state.status)},
                              {"live", state.status == tokens::Status::live},
                              {"reason", state.reason}};
        out["file"] = state.file ? nlohmann::json::parse(tokens::encode(*state.file))
                                 : nlohmann::json(nullptr);
        std::cout << out.dump(2) << "\n";
    } else {
        print_human(path, state);
    }
    return exit_status_for(state.status);
}

} // namespace preloadrun::supervisor
