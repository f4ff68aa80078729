#pragma once
// The signals preloadrun handles, and how they reach it: blocked in every
// thread (so nothing runs asynchronously in a handler and no thread can be
// killed by one) and read from a signalfd on the event loop.

#include "preloadrun/common/fd.hpp"

#include <signal.h>
#include <string>
#include <sys/types.h>
#include <vector>

namespace preloadrun::supervisor {

// Forwarded to the child as they arrive (DESIGN.md 5, "Signals").
inline constexpr int kForwardedSignals[] = {SIGTERM, SIGINT,   SIGHUP,  SIGQUIT, SIGUSR1,
                                            SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};

// Every signal the supervisor reads from its signalfd: the forwarded ones,
// SIGCHLD (reaping), SIGTSTP (job control) and SIGTTIN/SIGTTOU (blocked so
// that preloadrun, in the background while the child has the terminal, can
// write its log to the terminal and hand the terminal over without being
// stopped).
sigset_t supervised_signals();

// Blocks supervised_signals() in the calling thread; call it first thing in
// main(), before any thread starts, so that every thread inherits the mask.
void block_supervised_signals();

// True when every supervised signal is blocked in the calling thread.
bool supervised_signals_blocked();

// "SIGTERM", "SIGRTMIN+3", ... for logs.
std::string signal_name(int signo);

struct ReceivedSignal {
    int signo = 0;
    pid_t sender = 0; // 0 for the kernel (terminal, SIGCHLD from an exit, ...)
};

// A non-blocking, close-on-exec signalfd for supervised_signals().
class SignalFd {
public:
    SignalFd();
    int fd() const noexcept { return fd_.get(); }
    // Every signal pending now (empty when none), in the order read.
    std::vector<ReceivedSignal> read_pending();

private:
    Fd fd_;
};

} // namespace preloadrun::supervisor
