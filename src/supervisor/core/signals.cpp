#include "core/signals.hpp"

#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <pthread.h>
#include <sys/signalfd.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

namespace preloadrun::supervisor {

namespace {

// The kernel's sigset is 64 bits on Linux; rt_sigprocmask, rt_sigaction and
// signalfd4 take its size.
constexpr std::size_t kKernelSigsetSize = sizeof(SignalBits);

std::atomic<SignalBits> g_caller_ignored{0};
std::atomic<pid_t> g_main_thread{0};

int raw_sigprocmask(int how, const SignalBits* set, SignalBits* old) noexcept {
    return static_cast<int>(::syscall(SYS_rt_sigprocmask, how, set, old, kKernelSigsetSize));
}

// The kernel's struct sigaction, kept opaque: it is only ever copied from
// one signal to another. Big enough for every architecture's layout.
struct KernelSigaction {
    alignas(8) unsigned char bytes[64];
};

int raw_sigaction(int signo, const KernelSigaction* act, KernelSigaction* old) noexcept {
    return static_cast<int>(::syscall(SYS_rt_sigaction, signo, act, old, kKernelSigsetSize));
}

bool raw_ignored(int signo) {
    // The handler is the first member of the kernel's struct sigaction.
    KernelSigaction current{};
    if (raw_sigaction(signo, nullptr, &current) != 0) {
        return false;
    }
    void (*handler)(int) = nullptr;
    std::memcpy(&handler, current.bytes, sizeof handler);
    return handler == SIG_IGN;
}

// glibc's internal signals. glibc starts every new thread with 32 unblocked
// and gives no way to block it there, and its own sigprocmask() (called by
// libraries: an NSS module behind getpwnam(), for one) unblocks 32 and 33
// whenever it restores a mask. A 32 or 33 that lands where it is unblocked
// would kill preloadrun (32's default action) or be swallowed (glibc's
// handler for 33). This handler sends it on, with the sender's siginfo, to
// the main thread; on the main thread itself it first makes sure both are
// blocked again when the handler returns. Either way the signal ends up
// pending, blocked, on the main thread, and arrives on the signalfd like any
// other. (preloadrun never calls set*id(), which needs glibc's handler.)
constexpr int kGlibcSignals[] = {32, 33};

void relay_to_main_thread(int signo, siginfo_t* info, void* context) {
    const int saved = errno;
    const auto main_thread = g_main_thread.load();
    if (static_cast<pid_t>(::syscall(SYS_gettid)) == main_thread && context != nullptr) {
        // The mask sigreturn restores: its first word holds signals 1-64.
        auto* mask = &static_cast<ucontext_t*>(context)->uc_sigmask;
        SignalBits bits = 0;
        std::memcpy(&bits, mask, sizeof bits);
        bits |= signal_bit(32) | signal_bit(33);
        std::memcpy(mask, &bits, sizeof bits);
    }
    // The kernel takes a siginfo from another thread only as SI_QUEUE; the
    // sender's pid stays as it was.
    siginfo_t relayed = *info;
    relayed.si_code = SI_QUEUE;
    ::syscall(SYS_rt_tgsigqueueinfo, ::getpid(), main_thread, signo, &relayed);
    errno = saved;
}

// glibc's sigaction() refuses 32 and 33; the kernel's needs the restorer
// glibc supplies. So: install the handler on SIGURG through glibc, copy the
// kernel's record of it to 32 and 33, and put SIGURG back as it was.
void install_relay() {
    struct sigaction relay {};
    relay.sa_sigaction = relay_to_main_thread;
    relay.sa_flags = SA_SIGINFO | SA_RESTART;
    ::sigfillset(&relay.sa_mask);
    struct sigaction saved {};
    if (::sigaction(SIGURG, &relay, &saved) != 0) {
        throw_errno("sigaction");
    }
    KernelSigaction kernel{};
    bool copied = raw_sigaction(SIGURG, nullptr, &kernel) == 0;
    for (int signo : kGlibcSignals) {
        // One the caller ignored stays ignored, for us and for the child.
        if (copied && !caller_ignored(signo)) {
            copied = raw_sigaction(signo, &kernel, nullptr) == 0;
        }
    }
    const int err = errno;
    ::sigaction(SIGURG, &saved, nullptr);
    if (!copied) {
        throw_errno("rt_sigaction(32, 33)", err);
    }
}

// glibc's first thread start installs its handler for 33 and unblocks 32 and
// 33 in the thread that starts it, once: have that happen before the relay
// is installed. The thread does nothing (no allocation, so no malloc arena
// of its own), on a small stack (mapped as it is touched: barely), with
// every signal but 32 and 33 blocked, and is not waited for.
void start_first_thread() {
    pthread_attr_t attr;
    int err = ::pthread_attr_init(&attr);
    if (err == 0) {
        ::pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        // Room for a sanitizer's thread start as well.
        ::pthread_attr_setstacksize(&attr, std::max<std::size_t>(PTHREAD_STACK_MIN, 64 * 1024));
        pthread_t thread;
        err = ::pthread_create(
            &thread, &attr, [](void*) -> void* { return nullptr; }, nullptr);
        ::pthread_attr_destroy(&attr);
    }
    if (err != 0) {
        throw_errno("pthread_create", err);
    }
}

} // namespace

SignalBits supervised_signals() {
    SignalBits bits = 0;
    for (int signo = 1; signo <= kLastSignal; ++signo) {
        if (signo != SIGKILL && signo != SIGSTOP) {
            bits |= signal_bit(signo);
        }
    }
    return bits;
}

void record_caller_signal_state() {
    SignalBits ignored = 0;
    for (int signo = 1; signo <= kLastSignal; ++signo) {
        if (signo != SIGKILL && signo != SIGSTOP && raw_ignored(signo)) {
            ignored |= signal_bit(signo);
        }
    }
    g_caller_ignored = ignored;
    if ((ignored & signal_bit(SIGCHLD)) != 0) {
        // SIGCHLD ignored means children are reaped by the kernel, and
        // waitpid() never sees the child's status: not for preloadrun.
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(SIGCHLD, &dfl, nullptr);
    }
}

SignalBits caller_ignored_signals() {
    return g_caller_ignored.load();
}

bool caller_ignored(int signo) {
    return signo >= 1 && signo <= kLastSignal && (g_caller_ignored.load() & signal_bit(signo)) != 0;
}

void block_supervised_signals() {
    g_main_thread = static_cast<pid_t>(::syscall(SYS_gettid));
    const SignalBits set = supervised_signals();
    if (raw_sigprocmask(SIG_BLOCK, &set, nullptr) != 0) {
        throw_errno("rt_sigprocmask");
    }
    if (__libc_single_threaded) {
        start_first_thread();
        // 32 and 33 again, which the thread start unblocked here.
        raw_sigprocmask(SIG_BLOCK, &set, nullptr);
    }
    install_relay();
}

bool supervised_signals_blocked() {
    SignalBits current = 0;
    if (raw_sigprocmask(SIG_BLOCK, nullptr, &current) != 0) {
        return false;
    }
    // 32 and 33 may have been unblocked by glibc since: the relay covers them.
    const SignalBits wanted = supervised_signals() & ~(signal_bit(32) | signal_bit(33));
    return (current & wanted) == wanted;
}

void reset_glibc_signals_in_child(SignalBits ignored) noexcept {
    for (int signo : kGlibcSignals) {
        KernelSigaction act{}; // flags 0, empty mask
        void (*handler)(int) = (ignored & signal_bit(signo)) != 0 ? SIG_IGN : SIG_DFL;
        std::memcpy(act.bytes, &handler, sizeof handler);
        raw_sigaction(signo, &act, nullptr);
    }
}

void unblock_all_signals() noexcept {
    const SignalBits none = 0;
    raw_sigprocmask(SIG_SETMASK, &none, nullptr);
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
    const SignalBits set = supervised_signals();
    fd_.reset(static_cast<int>(
        ::syscall(SYS_signalfd4, -1, &set, kKernelSigsetSize, SFD_CLOEXEC | SFD_NONBLOCK)));
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
                                             static_cast<pid_t>(info[i].ssi_pid),
                                             info[i].ssi_code});
        }
        if (count < std::size(info)) {
            break;
        }
    }
    return signals;
}

} // namespace preloadrun::supervisor
