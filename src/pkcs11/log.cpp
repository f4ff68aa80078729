#include "log.hpp"

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/log.hpp"

#include <memory>
#include <mutex>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <string>
#include <syslog.h>
#include <unistd.h>

namespace preloadrun::pkcs11 {

namespace {

constexpr const char* kName = "libpreloadrun-pkcs11";

// Where PRELOADRUN_PKCS11_LOG sends the log (and the notices).
enum class Destination { none, off, standard_error, syslog, file };

// syslog(3) with the application's own openlog(3) settings, if any: the
// module never calls openlog, which would change the application's ident.
class SyslogSink final : public spdlog::sinks::base_sink<std::mutex> {
protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        spdlog::memory_buf_t formatted;
        formatter_->format(msg, formatted);
        std::string text(formatted.data(), formatted.size());
        while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) {
            text.pop_back();
        }
        ::syslog(priority(msg.level), "%s", text.c_str());
    }
    void flush_() override {}

private:
    static int priority(spdlog::level::level_enum level) {
        switch (level) {
        case spdlog::level::trace:
        case spdlog::level::debug:
            return LOG_DEBUG;
        case spdlog::level::info:
            return LOG_INFO;
        case spdlog::level::warn:
            return LOG_WARNING;
        case spdlog::level::err:
            return LOG_ERR;
        default:
            return LOG_CRIT;
        }
    }
};

struct ModuleLog {
    std::shared_ptr<spdlog::logger> logger;
    Destination destination = Destination::none;
};

ModuleLog make_log() {
    const char* where = getenv_nonempty("PRELOADRUN_PKCS11_LOG");
    const std::string_view what = where != nullptr ? where : "";
    ModuleLog result;
    spdlog::sink_ptr sink;
    std::string pattern = std::string(kName) + "[%P]: %l: %v";
    try {
        if (what.empty() || what == "off") {
            result.destination = what.empty() ? Destination::none : Destination::off;
            sink = std::make_shared<spdlog::sinks::null_sink_mt>();
        } else if (what == "stderr") {
            result.destination = Destination::standard_error;
            sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        } else if (what == "syslog") {
            result.destination = Destination::syslog;
            sink = std::make_shared<SyslogSink>();
            pattern = std::string(kName) + ": %l: %v";
        } else {
            sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(std::string(what));
            result.destination = Destination::file;
            pattern = "%Y-%m-%dT%H:%M:%S.%e " + std::string(kName) + "[%P]: %l: %v";
        }
    } catch (const std::exception&) {
        // An unwritable log file must not break the application.
        result.destination = Destination::standard_error;
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    }
    sink->set_pattern(pattern);
    result.logger = std::make_shared<spdlog::logger>(kName, sink);
    auto level = spdlog::level::info;
    if (const char* text = getenv_nonempty("PRELOADRUN_PKCS11_LOG_LEVEL")) {
        try {
            level = log::parse_level(text);
        } catch (const std::exception&) {
            result.logger->warn("PRELOADRUN_PKCS11_LOG_LEVEL='{}' is not a level; using info",
                                text);
        }
    }
    if (result.destination == Destination::none || result.destination == Destination::off) {
        level = spdlog::level::off;
    }
    result.logger->set_level(level);
    result.logger->flush_on(spdlog::level::trace);
    // A line that cannot be written (the application closed stderr, a full
    // disk) is dropped: spdlog's default would complain on the same stderr.
    result.logger->set_error_handler([](const std::string& /*message*/) {});
    // The shared code (HSM client, tokens file) logs to the same place.
    log::use_sink(sink, level);
    return result;
}

ModuleLog& module_log() {
    // Made once per process and never destroyed (entry points may run during
    // static destruction of the application).
    static auto* instance = new ModuleLog(make_log());
    return *instance;
}

// The line on stderr, in one write(2): the application's own output around
// it stays as it is.
void write_stderr(spdlog::level::level_enum level, std::string_view message) {
    const auto level_name = spdlog::level::to_string_view(level);
    std::string line = std::string(kName) + "[" + std::to_string(::getpid()) +
                       "]: " + std::string(level_name.data(), level_name.size()) + ": ";
    line.append(message);
    line += '\n';
    std::size_t done = 0;
    while (done < line.size()) {
        const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
        if (n <= 0) {
            return; // stderr closed or full: the application's business
        }
        done += static_cast<std::size_t>(n);
    }
}

} // namespace

spdlog::logger& logger() {
    return *module_log().logger;
}

void notice(spdlog::level::level_enum level, std::string_view message) noexcept {
    try {
        const auto& log = module_log();
        if (log.destination == Destination::off) {
            return;
        }
        std::string line(message);
        for (char& c : line) {
            if (c == '\n' || c == '\r') {
                c = ' ';
            }
        }
        if (log.destination != Destination::none) {
            // Straight to the sinks: whatever PRELOADRUN_PKCS11_LOG_LEVEL says.
            const spdlog::details::log_msg msg(log.logger->name(), level, line);
            for (const auto& sink : log.logger->sinks()) {
                sink->log(msg);
                sink->flush();
            }
        }
        if (log.destination == Destination::none || log.destination == Destination::file) {
            write_stderr(level, line);
        }
    } catch (...) {
        // A notice must never fail the call that gives it.
    }
}

} // namespace preloadrun::pkcs11
