#pragma once
// Reaping: collecting every child state change (exits, and for job control
// stops and continues), and becoming a subreaper so that orphans of the
// child's subtree are reparented to preloadrun and reaped by it.

#include <sys/types.h>
#include <vector>

namespace preloadrun::supervisor {

struct ChildEvent {
    pid_t pid = 0;
    int wait_status = 0; // as from waitpid: WIFEXITED, WIFSIGNALED, WIFSTOPPED, WIFCONTINUED
    bool ended() const noexcept;
};

// Every state change available now, without blocking:
// waitpid(-1, WNOHANG | WUNTRACED | WCONTINUED) until nothing is left.
std::vector<ChildEvent> collect_child_events();

// prctl(PR_SET_CHILD_SUBREAPER) for `--subreaper`: orphans of the child's
// subtree become preloadrun's children instead of init's. As PID 1 (in a
// container) this is implicit. Throws Error(io) on failure.
void become_subreaper();
bool is_subreaper();

// The exit status per preloadrun(1) for an ended child: its exit status, or
// 128+N when it died of signal N (never Boost's evaluate_exit_code, which
// turns SIGTERM into 15).
int exit_status_of(int wait_status) noexcept;

} // namespace preloadrun::supervisor
