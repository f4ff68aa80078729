// The Supervisor with real children (/bin/sh and the probe), in this process:
// the supervised signals are blocked here as in preloadrun's main(), so a
// kill(getpid(), SIG) reaches the Supervisor's signalfd as a signal sent to
// preloadrun would.

#include "core/reaper.hpp"
#include "core/supervisor.hpp"
#include "preloadrun/common/error.hpp"
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

// env(1)'s exit status for COMMAND. std::system() restores the signal mask
// through glibc, which cannot block 32 and 33: block them again.
int env_status(const std::string& command) {
    const int status = std::system(("env " + command + " 2>/dev/null").c_str());
    block_and_drain_signals();
    return WEXITSTATUS(status);
}

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
    SUBCASE("an argument list too long (E2BIG), as env(1)") {
        const std::string huge(200 * 1024, 'x'); // over MAX_ARG_STRLEN
        CHECK(status_of(sv::ChildSpec{{"/bin/true", huge}, {}, {}}, &message) == 126);
        CHECK(message == "/bin/true: argument list too long");
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

TEST_CASE("Supervisor: a script whose interpreter does not exist gives 127, as env(1)") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    const auto file = tmp / "script";
    std::ofstream(file) << "#!/nonexistent/interpreter\n";
    REQUIRE(::chmod(file.c_str(), 0755) == 0);
    std::string message;
    CHECK(status_of(sv::ChildSpec{{file.string()}, {}, {}}, &message) == 127);
    CHECK(message == file.string() + ": bad interpreter or loader: no such file or directory");
    CHECK(env_status(file.string()) == 127);
}

TEST_CASE("Supervisor: an executable file without #! runs through /bin/sh, as env(1)") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    const auto script = tmp / "script";
    std::ofstream(script) << "echo \"$0 $1 $2\" > " << (tmp / "out").string() << "\nexit 7\n";
    REQUIRE(::chmod(script.c_str(), 0755) == 0);
    CHECK(status_of(sv::ChildSpec{{script.string(), "a", "b c"}, {}, {}}) == 7);
    std::ifstream out(tmp / "out");
    std::string line;
    std::getline(out, line);
    CHECK(line == script.string() + " a b c");
    CHECK(env_status(script.string()) == 7);

    // Bytes that are no program at all: /bin/sh says why, with its status.
    const auto garbage = tmp / "garbage";
    std::ofstream(garbage) << "\x01\x02 not a program\n";
    REQUIRE(::chmod(garbage.c_str(), 0755) == 0);
    const int by_env = env_status(garbage.string());
    CHECK(by_env == 127);
    std::string message;
    CHECK(status_of(sv::ChildSpec{{garbage.string()}, {}, {}}, &message) == by_env);
    CHECK_MESSAGE(message.empty(), message);
}

TEST_CASE("Supervisor: the caller's descriptors and ignored signals pass to the child") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction old_hup {};
    REQUIRE(::sigaction(SIGHUP, &ignore, &old_hup) == 0);
    const int passed = ::fcntl(2, F_DUPFD, 40);   // the caller's
    const int consumed = ::fcntl(2, F_DUPFD, 41); // like --passphrase-fd
    REQUIRE(passed == 40);
    REQUIRE(consumed == 41);
    sv::record_caller_signal_state();
    sv::record_inherited_descriptors();
    sv::consume_inherited_descriptor(consumed);
    const int own = ::fcntl(2, F_DUPFD, 50); // opened later: preloadrun's, not passed
    // A SIGHUP to preloadrun is not forwarded: the caller ignores it.
    const auto report = tmp / "report";
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(probe({"--report", report.string(), "--until-file", (tmp / "stop").string()}));
    REQUIRE(run_until(loop, [&] { return std::filesystem::exists(report); }));
    REQUIRE(::kill(::getpid(), SIGHUP) == 0);
    run_until(
        loop, [] { return false; }, 200ms);
    CHECK(supervisor.running());
    touch(tmp / "stop");
    CHECK(supervisor.wait() == 0);

    ::sigaction(SIGHUP, &old_hup, nullptr);
    sv::record_caller_signal_state();
    ::close(passed);
    ::close(consumed);
    ::close(own);
    const auto recorded = sv::inherited_descriptors();
    for (int fd : recorded) {
        sv::consume_inherited_descriptor(fd); // as in a process that never recorded any
    }

    const auto r = read_key_values(report);
    const std::string fds = "," + r.at("fds") + ",";
    CHECK(fds.rfind(",0,1,2,", 0) == 0);
    CHECK(fds.find(",40,") != std::string::npos);
    CHECK(fds.find(",41,") == std::string::npos);
    CHECK(fds.find(",50,") == std::string::npos);
    CHECK(r.at("sigign") == "0000000000000001"); // SIGHUP, and nothing else
    CHECK(r.at("sigblk") == "0000000000000000");
}

TEST_CASE("Supervisor: LISTEN_PID naming preloadrun names the child (socket activation)") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    const auto report = tmp / "report";
    ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    ::setenv("LISTEN_FDS", "1", 1);
    CHECK(status_of(probe({"--report", report.string()})) == 0);
    auto env = read_env(report);
    CHECK(env["LISTEN_PID"] == std::vector<std::string>{read_key_values(report).at("pid")});
    CHECK(env["LISTEN_FDS"] == std::vector<std::string>{"1"});

    // For another process: passed as it is.
    ::setenv("LISTEN_PID", "1", 1);
    CHECK(status_of(probe({"--report", report.string()})) == 0);
    env = read_env(report);
    CHECK(env["LISTEN_PID"] == std::vector<std::string>{"1"});
    ::unsetenv("LISTEN_PID");
    ::unsetenv("LISTEN_FDS");
}

TEST_CASE("Supervisor: --process-group forwards to the child's whole process group") {
    block_and_drain_signals();
    testsupport::TempDir tmp;
    const auto pids = tmp / "pids";
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.forward_to_process_group(true);
    // sh starts a grandchild in the same group and waits for it; TERM to the
    // group ends both (sh alone would wait on for its sleep).
    supervisor.start(sh("sleep 30 & echo $! > " + pids.string() + ".tmp; mv " + pids.string() +
                        ".tmp " + pids.string() + "; trap '' TERM; wait $!"));
    REQUIRE(run_until(loop, [&] { return std::filesystem::exists(pids); }));
    std::string grandchild;
    std::ifstream(pids) >> grandchild;
    REQUIRE(::kill(::getpid(), SIGTERM) == 0);
    // sh ignores TERM but its wait ends when the sleep dies of it.
    CHECK(supervisor.wait() == 128 + SIGTERM);
    // Dead: gone, or a zombie until init reaps it. When sh died of the TERM
    // before its trap was set, the sleep got the same TERM but may still be
    // on its way out: it gets a moment.
    auto state = process_state(std::stoi(grandchild));
    for (int i = 0; i < 200 && state != '?' && state != 'Z'; ++i) {
        std::this_thread::sleep_for(10ms);
        state = process_state(std::stoi(grandchild));
    }
    CHECK((state == '?' || state == 'Z'));
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

// The signals the probe's --count counts.
constexpr int kCountedSignals[] = {SIGTERM, SIGINT,   SIGHUP,  SIGQUIT, SIGUSR1,
                                   SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};

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

    for (int signo : kCountedSignals) {
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
    for (int signo : kCountedSignals) {
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
        sv::unblock_all_signals();
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
