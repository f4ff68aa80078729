// The Supervisor with real children (/bin/sh and the probe), in this process:
// the supervised signals are blocked here as in preloadrun's main(), so a
// kill(getpid(), SIG) reaches the Supervisor's signalfd as a signal sent to
// preloadrun would.

#include "preloadrun/common/error.hpp"
#include "supervisor/child.hpp"
#include "supervisor/reaper.hpp"
#include "supervisor_test_util.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace sv = preloadrun::supervisor;
using namespace supervisor_test;
using preloadrun::Error;
using preloadrun::ErrorCode;

namespace {

sv::ChildSpec sh(const std::string& script) {
    return sv::ChildSpec{{"sh", "-c", script}, {}, {}};
}

sv::ChildSpec probe(std::vector<std::string> args) {
    args.insert(args.begin(), kProbe);
    return sv::ChildSpec{std::move(args), {}, {}};
}

// The exit status, or the status for the spawn error, as preloadrun's main does.
int status_of(const sv::ChildSpec& spec, std::string* message = nullptr) {
    try {
        return run_to_end(spec);
    } catch (const std::exception& e) {
        if (message != nullptr) {
            *message = e.what();
        }
        return sv::exit_status_for_spawn_error(e);
    }
}

void no_core_dumps() {
    const rlimit none{0, 0};
    REQUIRE(::setrlimit(RLIMIT_CORE, &none) == 0);
}

void touch(const std::filesystem::path& path) {
    std::ofstream(path) << "";
}

} // namespace

TEST_CASE("Supervisor: exit statuses pass through") {
    block_and_drain_signals();
    for (int status : {0, 1, 2, 126, 127, 254, 255}) {
        CAPTURE(status);
        CHECK(status_of(sh("exit " + std::to_string(status))) == status);
    }
    CHECK(status_of(probe({"--exit", "42"})) == 42);
}

TEST_CASE("Supervisor: death by signal N gives 128+N") {
    block_and_drain_signals();
    no_core_dumps();
    for (int signo : {SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGKILL}) {
        CAPTURE(signo);
        CHECK(status_of(sh("kill -s " + sv::signal_name(signo).substr(3) + " $$")) == 128 + signo);
    }
    CHECK(status_of(probe({"--die", "SEGV"})) == 128 + SIGSEGV);
}

TEST_CASE("Supervisor: COMMAND not found gives 127 and one clear message") {
    block_and_drain_signals();
    std::string message;
    CHECK(status_of(sv::ChildSpec{{"preloadrun-no-such-command"}, {}, {}}, &message) == 127);
    CHECK(message == "preloadrun-no-such-command: command not found");
    CHECK(status_of(sv::ChildSpec{{"/nonexistent/tool"}, {}, {}}, &message) == 127);
    CHECK(message == "/nonexistent/tool: no such file or directory");
    CHECK(sv::collect_child_events().empty()); // nothing left behind
}

TEST_CASE("Supervisor: COMMAND not executable gives 126") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    std::string message;

    SUBCASE("a file without the x bit") {
        const auto file = tmp / "script";
        std::ofstream(file) << "#!/bin/sh\nexit 0\n";
        REQUIRE(::chmod(file.c_str(), 0644) == 0);
        CHECK(status_of(sv::ChildSpec{{file.string()}, {}, {}}, &message) == 126);
        CHECK(message == file.string() + ": permission denied");
    }
    SUBCASE("a directory") {
        CHECK(status_of(sv::ChildSpec{{tmp.path().string()}, {}, {}}, &message) == 126);
        CHECK(message == tmp.path().string() + ": is a directory");
    }
    SUBCASE("an executable file in no executable format (exec format error)") {
        const auto file = tmp / "garbage";
        std::ofstream(file) << "\x01\x02 not a program\n";
        REQUIRE(::chmod(file.c_str(), 0755) == 0);
        CHECK(status_of(sv::ChildSpec{{file.string()}, {}, {}}, &message) == 126);
        CHECK(message == file.string() + ": exec format error");
    }
    SUBCASE("a script whose interpreter does not exist") {
        const auto file = tmp / "script";
        std::ofstream(file) << "#!/nonexistent/interpreter\n";
        REQUIRE(::chmod(file.c_str(), 0755) == 0);
        CHECK(status_of(sv::ChildSpec{{file.string()}, {}, {}}, &message) == 126);
    }
    SUBCASE("found in PATH but not executable") {
        std::ofstream(tmp / "tool") << "#!/bin/sh\n";
        REQUIRE(::chmod((tmp / "tool").c_str(), 0644) == 0);
        sv::ChildSpec spec{{"tool"}, {{"PATH", tmp.path().string()}}, {}};
        CHECK(status_of(spec, &message) == 126);
        CHECK(message == "tool: permission denied");
    }
    CHECK(sv::collect_child_events().empty()); // the failed child was reaped
}

TEST_CASE("Supervisor: the child starts clean (signals, descriptors, group, cwd)") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    // Dirty our own state: ignored and blocked signals, inheritable fds.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction old_pipe {};
    struct sigaction old_xfsz {};
    REQUIRE(::sigaction(SIGPIPE, &ignore, &old_pipe) == 0);
    REQUIRE(::sigaction(SIGXFSZ, &ignore, &old_xfsz) == 0);
    sigset_t extra;
    ::sigemptyset(&extra);
    ::sigaddset(&extra, SIGPROF);
    ::sigaddset(&extra, SIGRTMIN + 1);
    REQUIRE(::sigprocmask(SIG_BLOCK, &extra, nullptr) == 0);
    std::vector<int> leaked{::dup(2), ::dup(2), ::fcntl(2, F_DUPFD, 50), ::fcntl(2, F_DUPFD, 200)};
    for (int fd : leaked) {
        REQUIRE(fd > 2);
        REQUIRE((::fcntl(fd, F_GETFD) & FD_CLOEXEC) == 0);
    }
    const auto cwd = std::filesystem::current_path();
    std::filesystem::current_path(tmp.path());

    const auto report = tmp / "report";
    CHECK(status_of(probe({"--report", report.string()})) == 0);

    std::filesystem::current_path(cwd);
    for (int fd : leaked) {
        ::close(fd);
    }
    ::sigprocmask(SIG_UNBLOCK, &extra, nullptr);
    ::sigaction(SIGPIPE, &old_pipe, nullptr);
    ::sigaction(SIGXFSZ, &old_xfsz, nullptr);

    const auto r = read_key_values(report);
    REQUIRE(r.count("pid") == 1);
    CHECK(r.at("sigblk") == "0000000000000000");
    CHECK(r.at("sigign") == "0000000000000000");
    CHECK(r.at("fds") == "0,1,2");
    CHECK(r.at("pgid") == r.at("pid")); // its own process group
    CHECK(r.at("sid") == std::to_string(::getsid(0)));
    CHECK(r.at("ppid") == std::to_string(::getpid()));
    CHECK(r.at("cwd") == std::filesystem::canonical(tmp.path()).string());
}

TEST_CASE("Supervisor: environment additions and removals reach the child") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    ::setenv("PRELOADRUN_TEST_REMOVE", "gone", 1);
    ::setenv("PRELOADRUN_TEST_OVERRIDE", "old", 1);
    sv::ChildSpec spec = probe({"--report", (tmp / "report").string()});
    spec.set_env = {{"NFAST_NFKM_TOKENSFILE", "/run/preloadrun/tokens"},
                    {"PRELOADRUN_TEST_OVERRIDE", "new"}};
    spec.unset_env = {"PRELOADRUN_TEST_REMOVE"};
    CHECK(status_of(spec) == 0);
    ::unsetenv("PRELOADRUN_TEST_REMOVE");
    ::unsetenv("PRELOADRUN_TEST_OVERRIDE");

    auto env = read_env(tmp / "report");
    CHECK(env["NFAST_NFKM_TOKENSFILE"] == std::vector<std::string>{"/run/preloadrun/tokens"});
    CHECK(env["PRELOADRUN_TEST_OVERRIDE"] == std::vector<std::string>{"new"});
    CHECK(env.count("PRELOADRUN_TEST_REMOVE") == 0);
    CHECK(env.count("PATH") == 1);
}

TEST_CASE("Supervisor: each signal sent to preloadrun reaches the child exactly once") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    const auto counts = tmp / "counts";
    const auto ready = tmp / "ready";
    const auto stop = tmp / "stop";
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(probe(
        {"--count", counts.string(), "--ready", ready.string(), "--until-file", stop.string()}));
    REQUIRE(run_until(loop, [&] { return std::filesystem::exists(ready); }));

    for (int signo : sv::kForwardedSignals) {
        const std::string name = sv::signal_name(signo);
        CAPTURE(name);
        REQUIRE(::kill(::getpid(), signo) == 0);
        CHECK(run_until(loop, [&] { return read_counts(counts)[name] >= 1; }));
    }
    // Give duplicates time to show up, then let the probe finish.
    run_until(
        loop, [] { return false; }, std::chrono::milliseconds(300));
    touch(stop);
    CHECK(supervisor.wait() == 0);
    const auto final_counts = read_counts(counts);
    for (int signo : sv::kForwardedSignals) {
        const std::string name = sv::signal_name(signo);
        CAPTURE(name);
        CHECK(final_counts.at(name) == 1);
    }
}

TEST_CASE("Supervisor: SIGTERM to preloadrun ends a child that does not catch it (docker stop)") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(probe({"--ready", (tmp / "ready").string(), "--sleep-ms", "30000"}));
    REQUIRE(run_until(loop, [&] { return std::filesystem::exists(tmp / "ready"); }));
    REQUIRE(::kill(::getpid(), SIGTERM) == 0);
    CHECK(supervisor.wait() == 128 + SIGTERM);
}

TEST_CASE("Supervisor: SIGTSTP to preloadrun stops the child's group, SIGCONT continues it") {
    block_and_drain_signals();
    if (sv::Terminal::open_controlling().present()) {
        // With a terminal and job control, preloadrun would stop itself:
        // the pty tests cover that case.
        MESSAGE("skipped: this test process has a controlling terminal");
        return;
    }
    testsupport::TempDir tmp;
    const auto counts = tmp / "counts";
    const auto stop = tmp / "stop";
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(probe({"--count", counts.string(), "--ready", (tmp / "ready").string(),
                            "--until-file", stop.string()}));
    REQUIRE(run_until(loop, [&] { return std::filesystem::exists(tmp / "ready"); }));

    REQUIRE(::kill(::getpid(), SIGTSTP) == 0);
    CHECK(run_until(loop, [&] { return supervisor.child_stopped(); }));
    CHECK(process_state(supervisor.pid()) == 'T');

    REQUIRE(::kill(::getpid(), SIGCONT) == 0);
    CHECK(run_until(loop, [&] { return !supervisor.child_stopped(); }));
    CHECK(process_state(supervisor.pid()) != 'T');
    CHECK(run_until(loop, [&] { return read_counts(counts)["SIGCONT"] == 1; }));

    touch(stop);
    CHECK(supervisor.wait() == 0);
    CHECK(read_counts(counts).at("SIGCONT") == 1);
}

TEST_CASE("Supervisor: SIGTERM reaches a stopped child without job control") {
    block_and_drain_signals();
    if (sv::Terminal::open_controlling().present()) {
        MESSAGE("skipped: this test process has a controlling terminal");
        return;
    }
    testsupport::TempDir tmp;
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(probe({"--ready", (tmp / "ready").string(), "--sleep-ms", "30000"}));
    REQUIRE(run_until(loop, [&] { return std::filesystem::exists(tmp / "ready"); }));
    REQUIRE(::kill(supervisor.pid(), SIGSTOP) == 0);
    REQUIRE(run_until(loop, [&] { return supervisor.child_stopped(); }));
    REQUIRE(::kill(::getpid(), SIGTERM) == 0);
    CHECK(supervisor.wait() == 128 + SIGTERM);
}

TEST_CASE("Supervisor: orphans are reaped when preloadrun is a subreaper") {
    block_and_drain_signals();
    sv::become_subreaper();
    constexpr int kOrphans = 100;
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(probe({"--orphans", std::to_string(kOrphans), "--sleep-ms", "100"}));
    CHECK(supervisor.wait() == 0);
    // The orphans exit when the probe does: keep the loop going until all
    // have been reaped.
    CHECK(run_until(loop, [&] { return supervisor.others_reaped() >= kOrphans; }));
    CHECK(supervisor.others_reaped() == kOrphans);
    const auto left = children_of_this_process();
    for (const auto& child : left) {
        CAPTURE(child.pid);
        CAPTURE(child.state);
    }
    CHECK(left.empty()); // no zombie, nothing else
}

TEST_CASE("Supervisor: a signal with no child goes to the owner's hook") {
    block_and_drain_signals();
    sv::EventLoop loop;
    std::vector<int> got;
    sv::Supervisor::Hooks hooks;
    hooks.on_signal_without_child = [&got](int signo) { got.push_back(signo); };
    sv::Supervisor supervisor(loop, hooks);
    REQUIRE(::kill(::getpid(), SIGTERM) == 0);
    CHECK(run_until(loop, [&] { return !got.empty(); }));
    CHECK(got == std::vector<int>{SIGTERM});
}

TEST_CASE("Supervisor: refuses to run with the signals unblocked") {
    block_and_drain_signals();
    bool threw = false;
    std::thread unblocked([&threw] {
        const sigset_t set = sv::supervised_signals();
        ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
        sv::EventLoop loop;
        try {
            sv::Supervisor supervisor(loop);
        } catch (const Error& e) {
            threw = e.code() == ErrorCode::internal;
        }
    });
    unblocked.join();
    CHECK(threw);
}

TEST_CASE("Supervisor: the destructor kills and reaps a child still running") {
    block_and_drain_signals();
    pid_t pid = -1;
    {
        sv::EventLoop loop;
        sv::Supervisor supervisor(loop);
        supervisor.start(probe({"--sleep-ms", "30000"}));
        pid = supervisor.pid();
        REQUIRE(supervisor.running());
    }
    CHECK(::kill(pid, 0) == -1); // gone and reaped: not even a zombie
    CHECK(errno == ESRCH);
}

TEST_CASE("Supervisor: the loop keeps serving other watchers while the child runs") {
    block_and_drain_signals();
    sv::EventLoop loop;
    sv::Wakeup wakeup(loop);
    int ticks = 0;
    std::function<void()> tick = [&] {
        ++ticks;
        loop.after(std::chrono::milliseconds(10), tick);
    };
    loop.after(std::chrono::milliseconds(10), tick);
    bool posted = false;
    std::thread worker([&] { wakeup.post([&posted] { posted = true; }); });
    sv::Supervisor supervisor(loop);
    supervisor.start(sh("sleep 0.3"));
    CHECK(supervisor.wait() == 0);
    worker.join();
    CHECK(ticks >= 5);
    CHECK(posted);
}
