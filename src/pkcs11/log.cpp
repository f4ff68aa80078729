#include "pkcs11/log.hpp"

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/log.hpp"

#include <memory>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <string>

namespace preloadrun::pkcs11 {

namespace {

std::shared_ptr<spdlog::logger> make_logger() {
    const char* where = getenv_nonempty("PRELOADRUN_PKCS11_LOG");
    spdlog::sink_ptr sink;
    std::string pattern = "preloadrun-pkcs11[%P]: %l: %v";
    try {
        if (where == nullptr || *where == '\0') {
            sink = std::make_shared<spdlog::sinks::null_sink_mt>();
        } else if (std::string_view(where) == "stderr") {
            sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
        } else {
            sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(where);
            pattern = "%Y-%m-%dT%H:%M:%S.%e preloadrun-pkcs11[%P]: %l: %v";
        }
    } catch (const std::exception&) {
        // An unwritable log file must not break the application.
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    }
    sink->set_pattern(pattern);
    auto result = std::make_shared<spdlog::logger>("preloadrun-pkcs11", sink);
    auto level = spdlog::level::info;
    if (const char* text = getenv_nonempty("PRELOADRUN_PKCS11_LOG_LEVEL")) {
        try {
            level = log::parse_level(text);
        } catch (const std::exception&) {
            result->warn("PRELOADRUN_PKCS11_LOG_LEVEL='{}' is not a level; using info", text);
        }
    }
    if (where == nullptr || *where == '\0') {
        level = spdlog::level::off;
    }
    result->set_level(level);
    result->flush_on(spdlog::level::trace);
    // The shared code (HSM client, tokens file) logs to the same place.
    log::use_sink(sink, level);
    return result;
}

} // namespace

spdlog::logger& logger() {
    // Made once per process and never destroyed (entry points may run during
    // static destruction of the application).
    static auto* instance = new std::shared_ptr<spdlog::logger>(make_logger());
    return **instance;
}

} // namespace preloadrun::pkcs11
