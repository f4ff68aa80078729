#include "supervisor/signals.hpp"

#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <cstring>
#include <sys/signalfd.h>
#include <unistd.h>

namespace preloadrun::supervisor {

sigset_t supervised_signals() {
    sigset_t set;
    ::sigemptyset(&set);
    for (int signo : kForwardedSignals) {
        ::sigaddset(&set, signo);
    }
    for (int signo : {SIGCHLD, SIGTSTP, SIGTTIN, SIGTTOU}) {
        ::sigaddset(&set, signo);
    }
    return set;
}

void block_supervised_signals() {
    const sigset_t set = supervised_signals();
    if (int err = ::pthread_sigmask(SIG_BLOCK, &set, nullptr); err != 0) {
        throw_errno("pthread_sigmask", err);
    }
}

bool supervised_signals_blocked() {
    sigset_t current;
    if (::pthread_sigmask(SIG_BLOCK, nullptr, &current) != 0) {
        return false;
    }
    const sigset_t wanted = supervised_signals();
    for (int signo = 1; signo < NSIG; ++signo) {
        if (::sigismember(&wanted, signo) == 1 && ::sigismember(&current, signo) != 1) {
            return false;
        }
    }
    return true;
}

std::string signal_name(int signo) {
    if (signo >= SIGRTMIN && signo <= SIGRTMAX) {
        return "SIGRTMIN+" + std::to_string(signo - SIGRTMIN);
    }
    if (const char* abbrev = ::sigabbrev_np(signo)) {
        return std::string("SIG") + abbrev;
    }
    return "signal " + std::to_string(signo);
}

SignalFd::SignalFd() {
    const sigset_t set = supervised_signals();
    fd_.reset(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!fd_) {
        throw_errno("signalfd");
    }
}

std::vector<ReceivedSignal> SignalFd::read_pending() {
    std::vector<ReceivedSignal> signals;
    signalfd_siginfo info[8];
    for (;;) {
        const ssize_t n = ::read(fd_.get(), info, sizeof info);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            throw_errno("read signalfd");
        }
        const auto count = static_cast<std::size_t>(n) / sizeof(signalfd_siginfo);
        for (std::size_t i = 0; i < count; ++i) {
            signals.push_back(ReceivedSignal{static_cast<int>(info[i].ssi_signo),
                                             static_cast<pid_t>(info[i].ssi_pid)});
        }
        if (count < std::size(info)) {
            break;
        }
    }
    return signals;
}

} // namespace preloadrun::supervisor
