#include "core/signals.hpp"
#include "supervisor_test_util.hpp"

#include <chrono>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <thread>
#include <unistd.h>

namespace sv = preloadrun::supervisor;

namespace {

// Waits up to a second for something on the signalfd.
std::vector<sv::ReceivedSignal> wait_for_signals(sv::SignalFd& signals) {
    for (int i = 0; i < 1000; ++i) {
        auto got = signals.read_pending();
        if (!got.empty()) {
            return got;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return {};
}

} // namespace

TEST_CASE("supervised_signals: every signal but KILL and STOP, glibc's 32 and 33 included") {
    const sv::SignalBits set = sv::supervised_signals();
    for (int signo = 1; signo <= 64; ++signo) {
        CAPTURE(signo);
        CHECK(((set & sv::signal_bit(signo)) != 0) == (signo != SIGKILL && signo != SIGSTOP));
    }
}

TEST_CASE("block_supervised_signals blocks them in the calling thread") {
    supervisor_test::block_and_drain_signals();
    CHECK(sv::supervised_signals_blocked());
    sv::SignalBits mask = 0;
    REQUIRE(::syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &mask, sizeof mask) == 0);
    CHECK((mask & sv::signal_bit(32)) != 0); // what glibc's sigprocmask cannot do
    CHECK((mask & sv::signal_bit(33)) != 0);
    CHECK((mask & sv::signal_bit(SIGSEGV)) != 0);
    CHECK((mask & sv::signal_bit(SIGPIPE)) != 0);
}

TEST_CASE("signal_name") {
    CHECK(sv::signal_name(SIGTERM) == "SIGTERM");
    CHECK(sv::signal_name(SIGWINCH) == "SIGWINCH");
    CHECK(sv::signal_name(SIGRTMIN + 2) == "SIGRTMIN+2");
    CHECK(sv::signal_name(32) == "signal 32");
}

TEST_CASE("SignalFd is non-blocking and close-on-exec, and reads signal, sender and code") {
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
    CHECK(got[0].code == SI_USER);
    CHECK(got[0].from_process());
    CHECK(signals.read_pending().empty());
}

TEST_CASE("SignalFd reads what glibc hides: signals 32 and 33, and asynchronous SIGSEGV") {
    supervisor_test::block_and_drain_signals();
    sv::SignalFd signals;
    for (int signo : {32, 33, SIGSEGV, SIGPIPE, SIGRTMAX}) {
        CAPTURE(signo);
        REQUIRE(::kill(::getpid(), signo) == 0);
        const auto got = wait_for_signals(signals);
        REQUIRE(got.size() == 1);
        CHECK(got[0].signo == signo);
        CHECK(got[0].sender == ::getpid());
    }
}

TEST_CASE("a 32 delivered to a thread glibc started with it unblocked reaches the signalfd") {
    supervisor_test::block_and_drain_signals();
    sv::SignalFd signals;
    std::atomic<bool> stop{false};
    std::atomic<pid_t> tid{0};
    // glibc starts this thread with 32 unblocked, whatever our mask.
    std::thread worker([&] {
        tid = static_cast<pid_t>(::syscall(SYS_gettid));
        while (!stop) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    });
    while (tid == 0) {
        std::this_thread::yield();
    }
    sv::SignalBits mask = 0;
    // Directed at the worker: without the relay its default action would
    // end the test program.
    REQUIRE(::syscall(SYS_tgkill, ::getpid(), tid.load(), 32) == 0);
    const auto got = wait_for_signals(signals);
    stop = true;
    worker.join();
    REQUIRE(got.size() == 1);
    CHECK(got[0].signo == 32);
    CHECK(got[0].sender == ::getpid());
    REQUIRE(::syscall(SYS_rt_sigprocmask, SIG_BLOCK, nullptr, &mask, sizeof mask) == 0);
    CHECK((mask & sv::signal_bit(32)) != 0);
}

TEST_CASE("record_caller_signal_state: the caller's ignored signals; SIGCHLD made default") {
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction old_hup {};
    struct sigaction old_chld {};
    REQUIRE(::sigaction(SIGHUP, &ignore, &old_hup) == 0);
    REQUIRE(::sigaction(SIGCHLD, &ignore, &old_chld) == 0);
    sv::record_caller_signal_state();
    CHECK(sv::caller_ignored(SIGHUP));
    CHECK(sv::caller_ignored(SIGCHLD));
    CHECK_FALSE(sv::caller_ignored(SIGTERM));
    CHECK_FALSE(sv::caller_ignored(0));
    CHECK_FALSE(sv::caller_ignored(65));
    struct sigaction now {};
    REQUIRE(::sigaction(SIGCHLD, nullptr, &now) == 0);
    CHECK((now.sa_handler == SIG_DFL)); // or waitpid() would never see a child

    ::sigaction(SIGHUP, &old_hup, nullptr);
    ::sigaction(SIGCHLD, &old_chld, nullptr);
    sv::record_caller_signal_state();
    CHECK_FALSE(sv::caller_ignored(SIGHUP));
    CHECK(sv::caller_ignored_signals() == 0);
}
