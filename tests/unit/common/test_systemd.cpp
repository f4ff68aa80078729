#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/systemd.hpp"
#include "support/temp_dir.hpp"

#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace preloadrun;

namespace {

std::string receive(int fd) {
    char buf[256] = {};
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

} // namespace

TEST_CASE("notify_systemd") {
    SUBCASE("NOTIFY_SOCKET unset: nothing to do") {
        ::unsetenv("NOTIFY_SOCKET");
        CHECK(notify_systemd("READY=1"));
    }
    SUBCASE("a socket path") {
        testsupport::TempDir tmp;
        auto path = tmp / "notify";
        Fd fd(::socket(AF_UNIX, SOCK_DGRAM, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strcpy(addr.sun_path, path.c_str());
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
        CHECK(notify_systemd("READY=1"));
        CHECK(receive(fd.get()) == "READY=1");
        ::unsetenv("NOTIFY_SOCKET");
    }
    SUBCASE("an abstract socket") {
        std::string name = "preloadrun-test-notify-" + std::to_string(::getpid());
        Fd fd(::socket(AF_UNIX, SOCK_DGRAM, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::memcpy(addr.sun_path + 1, name.data(), name.size());
        auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
        REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0);
        ::setenv("NOTIFY_SOCKET", ("@" + name).c_str(), 1);
        CHECK(notify_systemd("STOPPING=1"));
        CHECK(receive(fd.get()) == "STOPPING=1");
        ::unsetenv("NOTIFY_SOCKET");
    }
    SUBCASE("nobody listening") {
        ::setenv("NOTIFY_SOCKET", "@preloadrun-test-nobody-listens", 1);
        CHECK_FALSE(notify_systemd("READY=1"));
        ::setenv("NOTIFY_SOCKET", "relative/path", 1);
        CHECK_FALSE(notify_systemd("READY=1"));
        ::unsetenv("NOTIFY_SOCKET");
    }
}
