#include "supervisor/signals.hpp"
#include "supervisor_test_util.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

namespace sv = preloadrun::supervisor;

TEST_CASE("supervised_signals: the forwarded ones, plus CHLD and the job-control ones") {
    const sigset_t set = sv::supervised_signals();
    for (int signo : {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT,
                      SIGALRM, SIGCHLD, SIGTSTP, SIGTTIN, SIGTTOU}) {
        CAPTURE(signo);
        CHECK(::sigismember(&set, signo) == 1);
    }
    CHECK(::sigismember(&set, SIGPIPE) == 0);
    CHECK(::sigismember(&set, SIGSEGV) == 0);
}

TEST_CASE("block_supervised_signals blocks them in the calling thread") {
    supervisor_test::block_and_drain_signals();
    CHECK(sv::supervised_signals_blocked());
}

TEST_CASE("signal_name") {
    CHECK(sv::signal_name(SIGTERM) == "SIGTERM");
    CHECK(sv::signal_name(SIGWINCH) == "SIGWINCH");
    CHECK(sv::signal_name(SIGRTMIN + 2) == "SIGRTMIN+2");
}

TEST_CASE("SignalFd is non-blocking and close-on-exec, and reads signal and sender") {
    supervisor_test::block_and_drain_signals();
    sv::SignalFd signals;
    CHECK((::fcntl(signals.fd(), F_GETFD) & FD_CLOEXEC) != 0);
    CHECK((::fcntl(signals.fd(), F_GETFL) & O_NONBLOCK) != 0);
    CHECK(signals.read_pending().empty());
    REQUIRE(::kill(::getpid(), SIGUSR2) == 0);
    REQUIRE(::kill(::getpid(), SIGHUP) == 0);
    const auto got = signals.read_pending();
    REQUIRE(got.size() == 2);
    CHECK(got[0].signo == SIGHUP); // standard signals come lowest first
    CHECK(got[1].signo == SIGUSR2);
    CHECK(got[0].sender == ::getpid());
    CHECK(signals.read_pending().empty());
}
