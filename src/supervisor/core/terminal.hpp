#pragma once
// preloadrun's controlling terminal, for job control: which process group is
// in the foreground, and handing the terminal to the child's group and back.
// SIGTTOU must be blocked (block_supervised_signals) for tcsetpgrp() to work
// from the background.

#include "preloadrun/common/fd.hpp"

#include <sys/types.h>

namespace preloadrun::supervisor {

class Terminal {
public:
    // The controlling terminal (/dev/tty, else the first of fds 0-2 that is
    // our controlling terminal), or an absent Terminal when there is none.
    static Terminal open_controlling();

    Terminal() = default;
    bool present() const noexcept { return static_cast<bool>(fd_); }
    int fd() const noexcept { return fd_.get(); }

    // The terminal's foreground process group, or -1.
    pid_t foreground() const noexcept;
    // Whether this process's group is the foreground group.
    bool we_are_foreground() const noexcept;
    // tcsetpgrp(); false (errno set) on failure.
    bool give_to(pid_t pgid) const noexcept;

    // Whether a job-control shell can stop and continue us: we have a
    // terminal and someone else leads our session. As a session leader
    // (docker -t, setsid -c, a pexpect'd process) or PID 1 nobody would
    // ever send the SIGCONT, so preloadrun must not stop itself.
    bool job_control() const noexcept;

private:
    explicit Terminal(Fd fd) : fd_(std::move(fd)) {}
    Fd fd_;
};

} // namespace preloadrun::supervisor
