#include "config.hpp"

#include <cstdlib>
#include <doctest/doctest.h>

using namespace std::chrono_literals;
using preloadrun::pkcs11::Config;

namespace {

// Sets a variable for one scope.
struct ScopedEnv {
    const char* name;
    ScopedEnv(const char* n, const char* value) : name(n) { ::setenv(name, value, 1); }
    ~ScopedEnv() { ::unsetenv(name); }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;
};

} // namespace

TEST_CASE("pkcs11::Config::from_environment: durations") {
    ::unsetenv("PRELOADRUN_PKCS11_RETRY_WINDOW");
    ::unsetenv("PRELOADRUN_PKCS11_SERVICE_WAIT");
    SUBCASE("defaults: 5 minutes of retries, 5 s of waiting for the service") {
        auto config = Config::from_environment();
        CHECK(config.retry_window == 5min);
        CHECK(config.service_wait == 5s);
    }
    SUBCASE("a number and its unit, as preloadrun --retry-window takes it") {
        ScopedEnv window("PRELOADRUN_PKCS11_RETRY_WINDOW", "2m");
        ScopedEnv wait("PRELOADRUN_PKCS11_SERVICE_WAIT", "1500ms");
        auto config = Config::from_environment();
        CHECK(config.retry_window == 2min);
        CHECK(config.service_wait == 1500ms);
    }
    SUBCASE("a bare number is milliseconds, as it always was") {
        ScopedEnv window("PRELOADRUN_PKCS11_RETRY_WINDOW", "300");
        ScopedEnv wait("PRELOADRUN_PKCS11_SERVICE_WAIT", "0");
        auto config = Config::from_environment();
        CHECK(config.retry_window == 300ms);
        CHECK(config.service_wait == 0ms);
    }
    SUBCASE("anything else leaves the default") {
        ScopedEnv window("PRELOADRUN_PKCS11_RETRY_WINDOW", "5 minutes");
        ScopedEnv wait("PRELOADRUN_PKCS11_SERVICE_WAIT", "-1");
        auto config = Config::from_environment();
        CHECK(config.retry_window == 5min);
        CHECK(config.service_wait == 5s);
    }
}
