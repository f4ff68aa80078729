#include "service_mode.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <unistd.h>

using namespace preloadrun::supervisor;

TEST_CASE("supervisor::shell_lines") {
    SUBCASE("high availability") {
        auto text = shell_lines(app_environment("/run/app/tokens.json", true, ""));
        CHECK(
            text.find(
                "NFAST_NFKM_TOKENSFILE='/run/app/tokens.json'; export NFAST_NFKM_TOKENSFILE;\n") !=
            std::string::npos);
        CHECK(text.find("CKNFAST_RELOAD_KEYS='1'; export CKNFAST_RELOAD_KEYS;\n") !=
              std::string::npos);
        CHECK(text.find("CKNFAST_LOADSHARING='1'; export CKNFAST_LOADSHARING;\n") !=
              std::string::npos);
        CHECK(text.find("echo preloadrun pid " + std::to_string(::getpid()) + ";\n") !=
              std::string::npos);
    }
    SUBCASE("load once unsets CKNFAST_RELOAD_KEYS") {
        auto text = shell_lines(app_environment("/t", false, ""));
        CHECK(text.find("unset CKNFAST_RELOAD_KEYS;\n") != std::string::npos);
        CHECK(text.find("CKNFAST_RELOAD_KEYS='1'") == std::string::npos);
    }
    SUBCASE("the service socket preloadrun used, made absolute") {
        auto text = shell_lines(app_environment("/t", true, "/run/hsmsim/client.sock"));
        CHECK(text.find("HSMSIM_SOCKET='/run/hsmsim/client.sock'; export HSMSIM_SOCKET;\n") !=
              std::string::npos);
        auto relative = shell_lines(app_environment("/t", true, "rel.sock"));
        CHECK(relative.find("HSMSIM_SOCKET='" + std::filesystem::current_path().string() +
                            "/rel.sock'") != std::string::npos);
        CHECK(shell_lines(app_environment("/t", true, "")).find("HSMSIM_SOCKET") ==
              std::string::npos);
    }
    SUBCASE("a path with a quote is quoted for the shell") {
        auto text = shell_lines(app_environment("/tmp/it's here", true, ""));
        CHECK(text.find("NFAST_NFKM_TOKENSFILE='/tmp/it'\\''s here';") != std::string::npos);
    }
}
