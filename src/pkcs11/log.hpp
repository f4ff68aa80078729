#pragma once
// The module's own logger. It is never registered in spdlog's registry and
// never replaces the application's default logger. Where it writes comes
// from PRELOADRUN_PKCS11_LOG: unset, no log; "stderr"; "syslog" (syslog(3)
// under the application's own ident and facility, each line starting
// "libpreloadrun-pkcs11: "); "off" (nothing at all, notices included); or a
// file path to append to. Level from PRELOADRUN_PKCS11_LOG_LEVEL (default
// info). Nothing is logged per operation at info.

#include <spdlog/logger.h>
#include <string_view>

namespace preloadrun::pkcs11 {

spdlog::logger& logger();

// A line the application's user must see whatever the log level, because
// something the application will trip over later is decided now: why
// C_Initialize failed, a tokens file that is not used. It is written once
// wherever the log goes (any level), and on stderr too unless the log
// already goes there, to syslog, or PRELOADRUN_PKCS11_LOG is "off". One line
// ("libpreloadrun-pkcs11[PID]: LEVEL: message"); never throws.
void notice(spdlog::level::level_enum level, std::string_view message) noexcept;

} // namespace preloadrun::pkcs11
