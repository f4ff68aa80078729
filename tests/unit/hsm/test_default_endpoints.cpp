#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <map>
#include <optional>
#include <string>
#include <unistd.h>

using namespace preloadrun::hsm;

namespace {

// Sets (or unsets, with nullopt) environment variables for one scope.
class EnvGuard {
public:
    EnvGuard(std::initializer_list<std::pair<const char*, std::optional<std::string>>> vars) {
        for (const auto& [name, value] : vars) {
            const char* old = std::getenv(name);
            saved_[name] = old ? std::optional<std::string>(old) : std::nullopt;
            set(name, value);
        }
    }
    EnvGuard(const EnvGuard&) = delete;
    EnvGuard& operator=(const EnvGuard&) = delete;
    ~EnvGuard() {
        for (const auto& [name, value] : saved_) {
            set(name.c_str(), value);
        }
    }

private:
    static void set(const char* name, const std::optional<std::string>& value) {
        if (value) {
            ::setenv(name, value->c_str(), 1);
        } else {
            ::unsetenv(name);
        }
    }
    std::map<std::string, std::optional<std::string>> saved_;
};

} // namespace

TEST_CASE("hsm::default_endpoint and hsm::default_admin_endpoint") {
    EnvGuard fleet_names{{"HSMFLEET_SOCKET", std::nullopt},
                         {"HSMFLEET_ADMIN_SOCKET", std::nullopt}};
    SUBCASE("HSMFLEET_SOCKET and HSMFLEET_ADMIN_SOCKET win over the older HSMSIM_ names") {
        EnvGuard env{{"HSMFLEET_SOCKET", "/run/f/client"},
                     {"HSMFLEET_ADMIN_SOCKET", "/run/f/admin"},
                     {"HSMSIM_SOCKET", "/run/a/client"},
                     {"HSMSIM_ADMIN_SOCKET", "/run/b/admin"}};
        CHECK(default_endpoint().socket_path == "/run/f/client");
        CHECK(default_admin_endpoint().socket_path == "/run/f/admin");
    }
    SUBCASE("HSMSIM_SOCKET and HSMSIM_ADMIN_SOCKET win over the default") {
        EnvGuard env{{"HSMSIM_SOCKET", "/run/a/client"},
                     {"HSMSIM_ADMIN_SOCKET", "/run/b/admin"},
                     {"XDG_RUNTIME_DIR", "/run/user/1"}};
        CHECK(default_endpoint().socket_path == "/run/a/client");
        CHECK(default_admin_endpoint().socket_path == "/run/b/admin");
    }
    SUBCASE("under XDG_RUNTIME_DIR when the variables are unset or empty") {
        EnvGuard env{{"HSMSIM_SOCKET", ""},
                     {"HSMSIM_ADMIN_SOCKET", std::nullopt},
                     {"XDG_RUNTIME_DIR", "/run/user/1"}};
        CHECK(default_endpoint().socket_path == "/run/user/1/hsmsim/client.sock");
        CHECK(default_admin_endpoint().socket_path == "/run/user/1/hsmsim/admin.sock");
    }
    SUBCASE("under $HOME/.hsmsim without XDG_RUNTIME_DIR, never under /tmp") {
        EnvGuard env{{"HSMSIM_SOCKET", std::nullopt},
                     {"HSMSIM_ADMIN_SOCKET", std::nullopt},
                     {"XDG_RUNTIME_DIR", std::nullopt},
                     {"HOME", "/home/someone"}};
        CHECK(default_endpoint().socket_path == "/home/someone/.hsmsim/client.sock");
        CHECK(default_admin_endpoint().socket_path == "/home/someone/.hsmsim/admin.sock");
    }
    SUBCASE("a relative XDG_RUNTIME_DIR is ignored") {
        EnvGuard env{
            {"HSMSIM_SOCKET", std::nullopt}, {"XDG_RUNTIME_DIR", "run"}, {"HOME", "/home/someone"}};
        CHECK(default_endpoint().socket_path == "/home/someone/.hsmsim/client.sock");
    }
    SUBCASE("no runtime directory and no home: a usage error naming the variable") {
        EnvGuard env{
            {"HSMSIM_SOCKET", std::nullopt}, {"XDG_RUNTIME_DIR", std::nullopt}, {"HOME", "/"}};
        try {
            (void)default_endpoint();
            FAIL("no error");
        } catch (const preloadrun::Error& e) {
            CHECK(e.code() == preloadrun::ErrorCode::usage);
            CHECK(std::string(e.what()).find("HSMFLEET_SOCKET") != std::string::npos);
        }
    }
    SUBCASE("the other fields keep their defaults") {
        EnvGuard env{{"HSMSIM_SOCKET", "/x"}};
        const Endpoint endpoint = default_endpoint();
        CHECK(endpoint.timeout == Endpoint{}.timeout);
        CHECK(endpoint.client_name == Endpoint{}.client_name);
    }
}
