#pragma once
// Running COMMAND as preloadrun's supervised child, the way tini and
// dumb-init do, with job control on a terminal. preloadrun(1), SIGNALS and
// EXIT STATUS, says what users see of it.
//
// Design (a mini job-control shell):
// - The child runs in its own process group. When preloadrun is in the
//   terminal's foreground, that group becomes the foreground group: the
//   terminal's signals (Ctrl-C, Ctrl-\, Ctrl-Z, window size) go to the child
//   alone and never to preloadrun, so nothing is delivered twice.
// - Signals sent to preloadrun (kill, docker stop, systemd) are read from a
//   signalfd and forwarded to the child (or its process group, by option),
//   once each: every signal but KILL and STOP, except those the caller of
//   preloadrun ignored (nohup), which stay ignored for the child.
// - The child stops (Ctrl-Z, SIGTTIN/SIGTTOU, SIGSTOP): preloadrun takes the
//   terminal back and stops itself (SIGSTOP) so that the shell sees the job
//   stopped. SIGCONT (fg/bg): preloadrun hands the terminal to the child's
//   group when it has itself been given the foreground (fg), and continues
//   the child's group (or forwards the SIGCONT when the child was not
//   stopped). A
//   SIGTSTP sent to preloadrun stops the child's group. `fg` of a job that
//   runs in the background sends no signal at all: preloadrun finds out
//   when the child touches the terminal and stops with SIGTTIN/SIGTTOU
//   while preloadrun is the foreground group, and then hands it over.
//   Without a job-control shell (preloadrun leads its session or is PID 1)
//   preloadrun never stops itself: nobody would continue it.
// - Every child is reaped (orphans too, as PID 1 or a subreaper).

#include "core/event_loop.hpp"
#include "core/signals.hpp"
#include "core/spawn.hpp"
#include "core/terminal.hpp"

#include <cstddef>
#include <functional>
#include <memory>
#include <sys/types.h>

namespace spdlog {
class logger;
}

namespace preloadrun::supervisor {

class Supervisor {
public:
    // Hooks for the owner (preloadrun's lifecycle): called on the loop thread.
    struct Hooks {
        // SIGTERM, SIGINT, SIGHUP or SIGQUIT (not ignored by the caller)
        // arrived while no child runs: before start() or after it exited.
        std::function<void(int signo)> on_signal_without_child;
        // A child other than COMMAND ended and was reaped (an orphan
        // reparented to preloadrun, or a process someone else forked: the
        // Supervisor reaps every child, so nobody else may waitpid()).
        std::function<void(pid_t pid, int wait_status)> on_other_child_exit;
    };

    // Watches the supervised signals on `loop` from now on. Requires
    // block_supervised_signals() in this thread (throws Error(internal)
    // otherwise: the signals would kill or interrupt preloadrun instead).
    explicit Supervisor(EventLoop& loop, Hooks hooks = {});
    Supervisor(const Supervisor&) = delete;
    Supervisor& operator=(const Supervisor&) = delete;
    // A child still running (an error path left before wait()) is killed
    // (SIGKILL to its group) and reaped, and the terminal taken back.
    ~Supervisor();

    // Starts the child: clean signal mask and default dispositions, only
    // fds 0-2 open, same cwd, stdio and terminal; its own process group,
    // made the terminal's foreground group when preloadrun is in the
    // foreground. Throws Error(not_found) -> 127, Error(permission) -> 126
    // (see exit_status_for_spawn_error); the message is "COMMAND: why", for
    // the one line "preloadrun: COMMAND: command not found".
    void start(const ChildSpec& spec);

    pid_t pid() const noexcept { return pid_; }
    bool running() const noexcept { return pid_ > 0 && !exited_; }
    bool child_stopped() const noexcept { return running() && stopped_; }

    // Forward signals to the child's whole process group (--process-group)
    // rather than to the child alone. Job-control signals go to the group
    // either way.
    void forward_to_process_group(bool on) noexcept { process_group_ = on; }

    // Runs the loop until the child has exited, forwarding signals and
    // handling job control; reaps every other child too (orphans when
    // preloadrun is PID 1 or a subreaper). Other watchers of the loop keep
    // running meanwhile. Returns the exit status per preloadrun(1): the
    // child's status, or 128+N when it died of signal N.
    int wait();

    // Children other than COMMAND reaped so far.
    std::size_t others_reaped() const noexcept { return others_reaped_; }

private:
    void on_signals();
    void on_signal(const ReceivedSignal& signal);
    void on_child_events(bool continue_pending);
    void on_child_stopped(int stop_signal);
    void on_continued(pid_t sender);
    void forward(int signo, pid_t sender);
    void take_terminal_back();

    EventLoop& loop_;
    Hooks hooks_;
    SignalFd signals_;
    Terminal terminal_;
    std::shared_ptr<spdlog::logger> log_;
    pid_t pid_ = -1; // also the child's process group id
    bool exited_ = false;
    bool stopped_ = false;
    bool job_control_ = false; // a shell can stop and continue preloadrun
    bool process_group_ = false;
    int status_ = 0;
    std::size_t others_reaped_ = 0;
};

} // namespace preloadrun::supervisor
