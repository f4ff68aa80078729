// serve() as `hsmsim serve` runs it: in a child process, stopped by SIGTERM.

#include "preloadrun/common/fd.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "server/serve.hpp"
#include "sim_test_util.hpp"
#include "support/temp_dir.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <regex>
#include <signal.h>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>

using namespace preloadrun;
using namespace std::chrono_literals;

namespace {

// Reads one line from fd within the timeout.
std::string read_line(int fd, std::chrono::milliseconds timeout) {
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, 100) <= 0) {
            continue;
        }
        char c = 0;
        if (::read(fd, &c, 1) != 1) {
            break;
        }
        if (c == '\n') {
            return line;
        }
        line += c;
    }
    return line;
}

struct Child {
    pid_t pid = -1;
    Fd out;
    Child() = default;
    Child(Child&& other) noexcept : pid(std::exchange(other.pid, -1)), out(std::move(other.out)) {}
    Child& operator=(Child&&) = delete;
    int wait() {
        int status = 0;
        for (int i = 0; i < 500; ++i) {
            if (::waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return status;
            }
            std::this_thread::sleep_for(10ms);
        }
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        pid = -1;
        FAIL("serve() did not stop on SIGTERM");
        return status;
    }
    ~Child() {
        if (pid > 0) {
            ::kill(pid, SIGKILL);
            ::waitpid(pid, nullptr, 0);
        }
    }
};

Child start(const sim::ServeOptions& options, const std::string& notify) {
    int pipe_fds[2];
    REQUIRE(::pipe2(pipe_fds, O_CLOEXEC) == 0);
    Child child;
    std::fflush(stdout); // or the child would print the parent's buffered output too
    std::fflush(stderr);
    child.pid = ::fork();
    REQUIRE(child.pid >= 0);
    if (child.pid == 0) {
        ::dup2(pipe_fds[1], STDOUT_FILENO);
        ::setenv("NOTIFY_SOCKET", notify.c_str(), 1);
        int rc = 125;
        try {
            rc = sim::serve(options);
        } catch (...) {
        }
        std::fflush(stdout);
        ::_exit(rc);
    }
    ::close(pipe_fds[1]);
    child.out = Fd(pipe_fds[0]);
    return child;
}

} // namespace

TEST_CASE("sim::serve prints one ready line, notifies systemd, stops on SIGTERM") {
    testsupport::TempDir tmp;
    sim::ServeOptions options;
    options.kmdata = tmp / "kmdata";
    options.socket = tmp / "client.sock";
    options.admin_socket = tmp / "adm" / "admin.sock";
    options.modules = 3;
    options.init_delay_ms = 10;

    std::string notify_name = "preloadrun-test-serve-" + std::to_string(::getpid());
    Fd notify(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path + 1, notify_name.data(), notify_name.size());
    REQUIRE(::bind(notify.get(), reinterpret_cast<sockaddr*>(&addr),
                   static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 +
                                          notify_name.size())) == 0);

    auto child = start(options, "@" + notify_name);
    auto line = read_line(child.out.get(), 10s);
    CAPTURE(line);
    std::smatch match;
    REQUIRE(std::regex_match(
        line, match,
        std::regex("hsmfleet: ready: 3 modules, world ([0-9a-f]{40}), socket " +
                   options.socket.string() + ", admin socket " + options.admin_socket.string())));

    pollfd pfd{notify.get(), POLLIN, 0};
    REQUIRE(::poll(&pfd, 1, 2000) == 1);
    char buf[64] = {};
    CHECK(std::string(buf, static_cast<std::size_t>(::recv(notify.get(), buf, sizeof buf, 0))) ==
          "READY=1");

    {
        hsm::SimClient client(hsm::Endpoint{options.socket.string(), 5000ms, "test"});
        CHECK(to_hex(client.world_id()) == match[1].str());
        CHECK(client.modules().size() == 3);
    }
    hsm::SimClient lingering(hsm::Endpoint{options.socket.string(), 5000ms, "test"});

    REQUIRE(::kill(child.pid, SIGTERM) == 0);
    int status = child.wait();
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(read_line(child.out.get(), 100ms).empty()); // exactly one line
    CHECK_FALSE(std::filesystem::exists(options.socket));
    CHECK_FALSE(std::filesystem::exists(options.admin_socket));
    CHECK(simtest::file_mode(options.kmdata / "world") == 0600);

    SUBCASE("the world is intact: a restart serves the same world") {
        auto again = start(options, "@" + notify_name);
        auto line2 = read_line(again.out.get(), 10s);
        CHECK(line2.find(match[1].str()) != std::string::npos);
        ::kill(again.pid, SIGINT);
        int status2 = again.wait();
        CHECK(WIFEXITED(status2));
        CHECK(WEXITSTATUS(status2) == 0);
    }
}
