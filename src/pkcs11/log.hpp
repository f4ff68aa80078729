#pragma once
// The module's own logger. It is never registered in spdlog's registry and
// never replaces the application's default logger. Off unless
// PRELOADRUN_PKCS11_LOG=stderr|<file path> is set; level from
// PRELOADRUN_PKCS11_LOG_LEVEL (default info). Nothing is logged per
// operation at info.

#include <spdlog/logger.h>

namespace preloadrun::pkcs11 {

spdlog::logger& logger();

} // namespace preloadrun::pkcs11
