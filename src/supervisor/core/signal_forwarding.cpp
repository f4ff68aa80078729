// What the Supervisor does with each signal sent to preloadrun: forwarded to
// the child (or its process group) once, kept from it (the kernel's own,
// those the caller ignored), or, with no child running, a request to end.

#include "core/supervisor.hpp"
#include "preloadrun/common/log.hpp"

#include <cerrno>
#include <cstring>
#include <signal.h>
#include <unistd.h>

namespace preloadrun::supervisor {

namespace {

// The signals that end preloadrun when no child runs (before it starts).
bool is_termination_request(int signo) {
    return signo == SIGTERM || signo == SIGINT || signo == SIGHUP || signo == SIGQUIT;
}

} // namespace

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

} // namespace preloadrun::supervisor
