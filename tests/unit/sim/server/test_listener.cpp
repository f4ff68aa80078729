#include "preloadrun/common/error.hpp"
#include "server/listener.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <fstream>
#include <functional>
#include <sys/socket.h>
#include <sys/un.h>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

using testsupport::code_of;

} // namespace

TEST_CASE("sim::Listener creates directories and sets modes") {
    testsupport::TempDir tmp;
    const auto client = tmp / "run" / "hsmsim" / "socket";
    const auto admin = tmp / "private" / "admin";
    {
        Listener c(client, 0660, 0755);
        Listener a(admin, 0600, 0700);
        CHECK(simtest::file_mode(client) == 0660);
        CHECK(simtest::file_mode(admin) == 0600);
        CHECK(simtest::file_mode(tmp / "run") == 0755);
        CHECK(simtest::file_mode(tmp / "run" / "hsmsim") == 0755);
        CHECK(simtest::file_mode(tmp / "private") == 0700);
        CHECK(connect_unix(client));

        SUBCASE("a live socket is not taken over") {
            std::string message;
            CHECK(code_of([&] { Listener again(client, 0660, 0755); }, &message) ==
                  ErrorCode::already_exists);
            CHECK(message == "another hsmsim is serving on " + client.string());
            CHECK(connect_unix(client)); // still served
        }
    }
    CHECK_FALSE(std::filesystem::exists(client));
    CHECK_FALSE(std::filesystem::exists(admin));
}

TEST_CASE("sim::Listener takes over a stale socket") {
    testsupport::TempDir tmp;
    const auto path = tmp / "sock";
    {
        // A socket file nobody listens on any more.
        Fd fd(::socket(AF_UNIX, SOCK_STREAM, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    }
    REQUIRE(std::filesystem::exists(path));
    CHECK_FALSE(connect_unix(path));
    Listener l(path, 0660, 0755);
    CHECK(connect_unix(path));
}

TEST_CASE("sim::Listener refuses what it should not replace") {
    testsupport::TempDir tmp;
    std::ofstream(tmp / "file") << "data";
    CHECK(code_of([&] { Listener l(tmp / "file", 0660, 0755); }) == ErrorCode::already_exists);
    CHECK(std::filesystem::exists(tmp / "file"));
    CHECK(code_of([&] { Listener l(tmp / std::string(120, 'x'), 0660, 0755); }) ==
          ErrorCode::usage);
}
