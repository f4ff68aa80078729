// The Supervisor's life: starting the child, the signal batches from the
// signalfd, reaping. What each signal does is in signal_forwarding.cpp;
// stops, continues and the terminal in job_control.cpp.

#include "core/supervisor.hpp"

#include "core/reaper.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

namespace preloadrun::supervisor {

namespace {

std::string describe(int wait_status) {
    if (WIFEXITED(wait_status)) {
        return "exited with status " + std::to_string(WEXITSTATUS(wait_status));
    }
    if (WIFSIGNALED(wait_status)) {
        return "was killed by " + signal_name(WTERMSIG(wait_status)) +
               (WCOREDUMP(wait_status) ? " (core dumped)" : "");
    }
    if (WIFSTOPPED(wait_status)) {
        return "was stopped by " + signal_name(WSTOPSIG(wait_status));
    }
    return "continued";
}

} // namespace

Supervisor::Supervisor(EventLoop& loop, Hooks hooks)
    : loop_(loop), hooks_(std::move(hooks)), log_(log::get("supervisor")) {
    if (!supervised_signals_blocked()) {
        throw Error(ErrorCode::internal,
                    "the supervised signals are not blocked: call block_supervised_signals() "
                    "first thing in main()");
    }
    loop_.watch(signals_.fd(), [this] { on_signals(); });
}

Supervisor::~Supervisor() {
    loop_.unwatch(signals_.fd());
    if (!running()) {
        return;
    }
    log_->warn("killing child {} (preloadrun is giving up on it)", pid_);
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    take_terminal_back();
}

void Supervisor::start(const ChildSpec& spec) {
    if (pid_ > 0) {
        throw Error(ErrorCode::internal, "Supervisor::start called twice");
    }
    terminal_ = Terminal::open_controlling();
    job_control_ = terminal_.job_control();
    SpawnOptions options;
    options.terminal_fd = terminal_.fd();
    options.give_terminal = terminal_.we_are_foreground();
    pid_ = spawn_child(spec, options);
    log_->debug("started {} as pid {} in its own process group{}{}", spec.argv.front(), pid_,
                options.give_terminal ? ", in the terminal's foreground" : "",
                job_control_ ? ", job control on" : "");
}

int Supervisor::wait() {
    if (pid_ <= 0) {
        throw Error(ErrorCode::internal, "Supervisor::wait without a child");
    }
    while (!exited_) {
        loop_.run_once();
    }
    return status_;
}

void Supervisor::on_signals() {
    const auto received = signals_.read_pending();
    const auto has = [&received](int signo) {
        return std::any_of(received.begin(), received.end(),
                           [signo](const ReceivedSignal& r) { return r.signo == signo; });
    };
    // Reap first, so that the rest of the batch sees the child's state. A
    // SIGCONT in the same batch as the child's stop means we have just been
    // continued (fg/bg while we were stopped): resume, do not stop again.
    if (has(SIGCHLD)) {
        on_child_events(has(SIGCONT));
    }
    for (const auto& signal : received) {
        on_signal(signal);
    }
}

void Supervisor::on_child_events(bool continue_pending) {
    for (const ChildEvent& event : collect_child_events()) {
        if (event.pid != pid_ || exited_) {
            if (event.ended()) {
                ++others_reaped_;
                log_->debug("reaped pid {}: it {}", event.pid, describe(event.wait_status));
                if (hooks_.on_other_child_exit) {
                    hooks_.on_other_child_exit(event.pid, event.wait_status);
                }
            }
            continue;
        }
        log_->debug("child {} {}", pid_, describe(event.wait_status));
        if (event.ended()) {
            exited_ = true;
            stopped_ = false;
            status_ = exit_status_of(event.wait_status);
            take_terminal_back();
        } else if (WIFSTOPPED(event.wait_status)) {
            stopped_ = true;
            if (!continue_pending) {
                on_child_stopped(WSTOPSIG(event.wait_status));
            }
        } else if (WIFCONTINUED(event.wait_status)) {
            stopped_ = false;
        }
    }
}

} // namespace preloadrun::supervisor
