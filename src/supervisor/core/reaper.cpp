#include "core/reaper.hpp"

#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <sys/prctl.h>
#include <sys/wait.h>

namespace preloadrun::supervisor {

bool ChildEvent::ended() const noexcept {
    return WIFEXITED(wait_status) || WIFSIGNALED(wait_status);
}

std::vector<ChildEvent> collect_child_events() {
    std::vector<ChildEvent> events;
    for (;;) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, WNOHANG | WUNTRACED | WCONTINUED);
        if (pid > 0) {
            events.push_back(ChildEvent{pid, status});
            continue;
        }
        if (pid < 0 && errno == EINTR) {
            continue;
        }
        break; // 0: children left but none changed; ECHILD: no children
    }
    return events;
}

void become_subreaper() {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL) != 0) {
        throw_errno("prctl(PR_SET_CHILD_SUBREAPER)");
    }
}

bool is_subreaper() {
    int flag = 0;
    return ::prctl(PR_GET_CHILD_SUBREAPER, &flag, 0UL, 0UL, 0UL) == 0 && flag != 0;
}

int exit_status_of(int wait_status) noexcept {
    if (WIFEXITED(wait_status)) {
        return WEXITSTATUS(wait_status);
    }
    if (WIFSIGNALED(wait_status)) {
        return 128 + WTERMSIG(wait_status);
    }
    return 125; // not an ended child: a caller's bug
}

} // namespace preloadrun::supervisor
