#include "core/reaper.hpp"
#include "supervisor_test_util.hpp"

#include <doctest/doctest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace sv = preloadrun::supervisor;
using namespace std::chrono_literals;

namespace {

// The wait status of a child that runs `body` in the child and then _exit(0).
template <class Body> int status_of_child(Body body) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        body();
        ::_exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    return status;
}

} // namespace

TEST_CASE("exit_status_of: the exit status, or 128+N for death by signal N") {
    const rlimit no_core{0, 0};
    REQUIRE(::setrlimit(RLIMIT_CORE, &no_core) == 0);
    CHECK(sv::exit_status_of(status_of_child([] { ::_exit(0); })) == 0);
    CHECK(sv::exit_status_of(status_of_child([] { ::_exit(3); })) == 3);
    CHECK(sv::exit_status_of(status_of_child([] { ::_exit(255); })) == 255);
    for (int signo : {SIGTERM, SIGKILL, SIGQUIT, SIGSEGV}) {
        CAPTURE(signo);
        CHECK(sv::exit_status_of(status_of_child([signo] {
                  ::signal(signo, SIG_DFL);
                  sigset_t set;
                  ::sigemptyset(&set);
                  ::sigaddset(&set, signo);
                  ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
                  ::raise(signo);
              })) == 128 + signo);
    }
}

TEST_CASE("collect_child_events reports exits, stops and continues without blocking") {
    CHECK(sv::collect_child_events().empty()); // no children: ECHILD, no throw
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::pause();
        ::_exit(0);
    }
    CHECK(sv::collect_child_events().empty()); // running: nothing to report
    auto wait_for = [](auto pred) {
        for (int i = 0; i < 500; ++i) {
            for (const auto& e : sv::collect_child_events()) {
                if (pred(e)) {
                    return true;
                }
            }
            std::this_thread::sleep_for(10ms);
        }
        return false;
    };
    ::kill(pid, SIGSTOP);
    CHECK(wait_for([pid](const sv::ChildEvent& e) {
        return e.pid == pid && WIFSTOPPED(e.wait_status) && !e.ended();
    }));
    ::kill(pid, SIGCONT);
    CHECK(wait_for(
        [pid](const sv::ChildEvent& e) { return e.pid == pid && WIFCONTINUED(e.wait_status); }));
    ::kill(pid, SIGKILL);
    CHECK(wait_for([pid](const sv::ChildEvent& e) {
        return e.pid == pid && e.ended() && WTERMSIG(e.wait_status) == SIGKILL;
    }));
}

TEST_CASE("become_subreaper") {
    sv::become_subreaper();
    CHECK(sv::is_subreaper());
}
