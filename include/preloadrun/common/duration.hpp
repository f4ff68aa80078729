#pragma once
// Durations as people write them: a whole number and its unit, ms, s, m or h
// ("1500ms", "30s", "5m", "1h"). One parser for every duration a user gives,
// on preloadrun's command line (--retry-window) and in the PKCS#11 module's
// environment (PRELOADRUN_PKCS11_RETRY_WINDOW, PRELOADRUN_PKCS11_SERVICE_WAIT),
// so that the same text means the same time everywhere.

#include <chrono>
#include <string_view>

namespace preloadrun {

// What a number without a unit means.
enum class BareNumber {
    refused,      // a command-line option: "300" could mean seconds or minutes
    milliseconds, // an environment variable that took milliseconds before units
};

// The duration `text` stands for. Throws Error(usage) saying what is wrong,
// without naming the option or variable (the caller puts that first). At
// most 1000000000 of the unit.
std::chrono::milliseconds parse_duration(std::string_view text,
                                         BareNumber bare = BareNumber::refused);

} // namespace preloadrun
