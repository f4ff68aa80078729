#include "supervisor/child.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "supervisor/reaper.hpp"

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

// The signals that end preloadrun when no child runs (before it starts).
bool is_termination_request(int signo) {
    return signo == SIGTERM || signo == SIGINT || signo == SIGHUP || signo == SIGQUIT;
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

void Supervisor::on_signal(const ReceivedSignal& signal) {
    const auto [signo, sender, code] = signal;
    // The kernel's own: SIGCHLD for a child's state change (reaped above),
    // SIGTTIN/SIGTTOU when preloadrun touched the terminal from the
    // background (it carries on: they are blocked).
    if ((signo == SIGCHLD || signo == SIGTTIN || signo == SIGTTOU) && !signal.from_process()) {
        return;
    }
    // Raised by preloadrun's own write to a pipe nobody reads (its stderr
    // reader has gone) or beyond the file size limit: the write fails, the
    // log line is dropped, nothing else happens. Never sent to the child.
    if ((signo == SIGPIPE || signo == SIGXFSZ) && sender == ::getpid()) {
        return;
    }
    if (caller_ignored(signo)) {
        log_->debug("{} from pid {} ignored: preloadrun's caller ignores it", signal_name(signo),
                    sender);
        return;
    }
    if (!running()) {
        if (is_termination_request(signo) && hooks_.on_signal_without_child) {
            hooks_.on_signal_without_child(signo);
        } else {
            log_->debug("{} with no child running: ignored", signal_name(signo));
        }
        return;
    }
    if (signo == SIGTSTP) {
        // Sent by a process (the terminal's goes to the child's group):
        // stop the child's group as Ctrl-Z would; its stop stops us.
        log_->debug("{} from pid {}: stopping the child's process group {}", signal_name(signo),
                    sender, pid_);
        ::kill(-pid_, SIGTSTP);
    } else if (signo == SIGCONT) {
        on_continued(sender);
    } else {
        forward(signo, sender);
    }
}

void Supervisor::forward(int signo, pid_t sender) {
    const pid_t target = process_group_ ? -pid_ : pid_;
    log_->debug("forwarding {} (from pid {}) to {} {}", signal_name(signo), sender,
                process_group_ ? "the child's process group" : "child", pid_);
    if (::kill(target, signo) != 0) {
        log_->debug("cannot forward {} to {}: {}", signal_name(signo), pid_, std::strerror(errno));
    }
    // As a shell's kill does for a stopped job: a stopped child would only
    // see the TERM/HUP when continued. With job control the shell sends
    // the SIGCONT itself (and we pass it on).
    if ((signo == SIGTERM || signo == SIGHUP) && stopped_ && !job_control_) {
        ::kill(-pid_, SIGCONT);
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

void Supervisor::on_child_stopped(int stop_signal) {
    // `fg` of a job running in the background gives our group the terminal
    // without any signal (bash sends SIGCONT only to stopped jobs): we learn
    // it when the child, still in the background, touches the terminal and
    // stops with SIGTTIN/SIGTTOU while we are the foreground. Pass the
    // terminal on and let it go on.
    if ((stop_signal == SIGTTIN || stop_signal == SIGTTOU) && terminal_.we_are_foreground()) {
        if (terminal_.give_to(pid_)) {
            log_->debug("handed the terminal to the child's process group {} (fg of a "
                        "background job)",
                        pid_);
            ::kill(-pid_, SIGCONT);
            return;
        }
        log_->debug("cannot hand the terminal to process group {}: {}", pid_, std::strerror(errno));
    }
    if (!job_control_) {
        log_->info("child {} stopped by {}; without a job-control shell preloadrun stays "
                   "running: send it SIGCONT to continue the child",
                   pid_, signal_name(stop_signal));
        return;
    }
    // Like a shell when its job stops: take the terminal back, then stop
    // ourselves so that our shell sees the job (preloadrun) stopped.
    take_terminal_back();
    // A SIGCONT already pending (fg typed at once) would be lost on us if
    // we stopped now: the shell would see the job stopped again.
    sigset_t pending;
    if (::sigpending(&pending) == 0 && ::sigismember(&pending, SIGCONT) == 1) {
        log_->debug("not stopping: a SIGCONT is pending");
        return;
    }
    log_->debug("stopping preloadrun too (job control)");
    ::kill(::getpid(), SIGSTOP);
    log_->debug("preloadrun continued");
}

void Supervisor::on_continued(pid_t sender) {
    // fg: the shell gave our group the terminal before continuing us; pass
    // it on to the child's group (also when the child was running in the
    // background after a bg). bg: we are continued without it, and so is
    // the child.
    if (terminal_.we_are_foreground()) {
        if (terminal_.give_to(pid_)) {
            log_->debug("handed the terminal to the child's process group {}", pid_);
        } else {
            log_->debug("cannot hand the terminal to process group {}: {}", pid_,
                        std::strerror(errno));
        }
    }
    if (stopped_) {
        // The whole group stopped (Ctrl-Z stops the foreground group).
        log_->debug("continuing the child's process group {}", pid_);
        ::kill(-pid_, SIGCONT);
    } else {
        forward(SIGCONT, sender);
    }
}

void Supervisor::take_terminal_back() {
    if (terminal_.present() && terminal_.foreground() == pid_) {
        if (terminal_.give_to(::getpgrp())) {
            log_->debug("took the terminal back from process group {}", pid_);
        } else {
            log_->debug("cannot take the terminal back: {}", std::strerror(errno));
        }
    }
}

} // namespace preloadrun::supervisor
