#include "preloadrun/common/log.hpp"

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <unistd.h>
#include <vector>

namespace preloadrun::log {

namespace {

struct State {
    std::mutex mutex;
    std::vector<spdlog::sink_ptr> sinks;
    spdlog::level::level_enum level = spdlog::level::off;
    std::map<std::string, std::shared_ptr<spdlog::logger>> loggers;
};

State& state() {
    // Never destroyed: loggers may be used during static destruction.
    static auto* s = new State;
    return *s;
}

// With the mutex held: points every existing logger at the current sinks.
void apply_locked(State& s) {
    for (auto& [name, logger] : s.loggers) {
        logger->sinks() = s.sinks;
        logger->set_level(s.level);
    }
}

} // namespace

spdlog::level::level_enum parse_level(std::string_view text) {
    static constexpr std::pair<std::string_view, spdlog::level::level_enum> names[] = {
        {"trace", spdlog::level::trace},       {"debug", spdlog::level::debug},
        {"info", spdlog::level::info},         {"warn", spdlog::level::warn},
        {"warning", spdlog::level::warn},      {"error", spdlog::level::err},
        {"critical", spdlog::level::critical}, {"off", spdlog::level::off},
    };
    for (const auto& [name, level] : names) {
        if (text == name) {
            return level;
        }
    }
    throw Error(ErrorCode::usage, "unknown log level '" + std::string(text) +
                                      "' (use trace, debug, info, warn, error, critical or off)");
}

spdlog::level::level_enum adjust_level(spdlog::level::level_enum base, int verbose, int quiet) {
    int level = static_cast<int>(base) - verbose + quiet;
    if (level < spdlog::level::trace) {
        level = spdlog::level::trace;
    }
    if (level > spdlog::level::off) {
        level = spdlog::level::off;
    }
    return static_cast<spdlog::level::level_enum>(level);
}

bool want_color() {
    if (getenv_nonempty("NO_COLOR") != nullptr) {
        return false;
    }
    return ::isatty(STDERR_FILENO) == 1;
}

void setup(const Config& config) {
    spdlog::sink_ptr sink;
    std::string pattern = config.program + "[%P]: %^%l%$: %v";
    if (config.file) {
        sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(*config.file);
        pattern = "%Y-%m-%dT%H:%M:%S.%e " + config.program + "[%P] %n: %l: %v";
    } else {
        sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>(
            config.color ? spdlog::color_mode::always : spdlog::color_mode::never);
    }
    sink->set_pattern(pattern);
    use_sink(std::move(sink), config.level);
}

void use_sink(spdlog::sink_ptr sink, spdlog::level::level_enum level) {
    auto& s = state();
    std::lock_guard lock(s.mutex);
    s.sinks = {std::move(sink)};
    s.level = level;
    apply_locked(s);
}

std::shared_ptr<spdlog::logger> get(const std::string& subsystem) {
    auto& s = state();
    std::lock_guard lock(s.mutex);
    auto& logger = s.loggers[subsystem];
    if (!logger) {
        logger = std::make_shared<spdlog::logger>(subsystem, s.sinks.begin(), s.sinks.end());
        logger->set_level(s.level);
        // A log line that cannot be written (stderr's reader has gone, a
        // full disk) is dropped: spdlog's default would write a complaint
        // to the same stderr.
        logger->set_error_handler([](const std::string& /*message*/) {});
    }
    return logger;
}

} // namespace preloadrun::log
