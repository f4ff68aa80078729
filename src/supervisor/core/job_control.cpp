// Job control, as a shell does for its jobs: the child stopped (take the
// terminal back, stop preloadrun too), continued (hand the terminal on when
// preloadrun is in the foreground), `fg` of a background job.

#include "core/supervisor.hpp"
#include "preloadrun/common/log.hpp"

#include <cerrno>
#include <cstring>
#include <signal.h>
#include <unistd.h>

namespace preloadrun::supervisor {

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
