// The terminal prompt for a passphrase, safe under job control.
//
// The terminal's settings are only read, and only changed, while this
// process's group is the terminal's foreground group: in the background
// they are the settings of whoever has the terminal (a shell's line editor
// keeps it in raw mode), and "restoring" those would leave the terminal
// unusable. A background process stops its own group with SIGTTOU, as the
// terminal would, and looks again once continued (fg).
//
// While the question is asked, echo is off and the line discipline edits
// the line (ICANON, ISIG, ICRNL so that Enter ends it). The signals that
// matter here are caught (no SA_RESTART) and reported through a pipe that
// is polled with the terminal, so none is missed between two system calls:
// - SIGINT, SIGTERM, SIGHUP, SIGQUIT (and the other asynchronous signals
//   that end a process): the terminal is restored, everything unwound (the
//   passphrases wiped), and the process dies of the same signal.
// - SIGTSTP (Ctrl-Z), SIGTTIN, SIGTTOU: the terminal is restored and the
//   process stops; once continued and in the foreground again, it asks
//   again from the start (the kernel discarded what was typed on Ctrl-Z).
// - SIGCONT without a stop of ours (SIGSTOP, then fg or bg): the prompt
//   goes on when the terminal is still ours as we left it; otherwise it
//   asks again, after turning echo off, so that no byte typed with echo
//   on is ever read as part of a passphrase.
// The caller's dispositions and signal mask are put back afterwards.

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/passphrase.hpp"
#include "preloadrun/common/wiping_allocator.hpp"

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <poll.h>
#include <pthread.h>
#include <string_view>
#include <termios.h>
#include <unistd.h>

namespace preloadrun {

namespace {

// Signals that end a process by default and may come from a terminal or
// another process while the question is asked.
constexpr int kEndSignals[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM};
// Job control: Ctrl-Z, and terminal access from the background.
constexpr int kStopSignals[] = {SIGTSTP, SIGTTIN, SIGTTOU};
// Every signal the prompt catches.
constexpr auto kHandled = [] {
    std::array<int, std::size(kEndSignals) + std::size(kStopSignals) + 1> all{};
    std::size_t n = 0;
    for (int signo : kEndSignals) {
        all[n++] = signo;
    }
    for (int signo : kStopSignals) {
        all[n++] = signo;
    }
    all[n] = SIGCONT;
    return all;
}();

using SignalSet = std::uint64_t; // bit N for signal N (N < 64)
constexpr SignalSet bit(int signo) {
    return SignalSet{1} << static_cast<unsigned>(signo);
}

std::atomic<SignalSet> g_caught{0};
std::atomic<unsigned> g_continued{0};
std::atomic<int> g_wake_fd{-1};
static_assert(std::atomic<SignalSet>::is_always_lock_free);
static_assert(std::atomic<int>::is_always_lock_free);

void note_signal(int signo) {
    const int saved = errno;
    g_caught.fetch_or(bit(signo));
    if (signo == SIGCONT) {
        g_continued.fetch_add(1);
    }
    const int fd = g_wake_fd.load();
    if (fd >= 0) {
        const char byte = 0;
        [[maybe_unused]] const auto n = ::write(fd, &byte, 1); // a full pipe wakes up as well
    }
    errno = saved;
}

// What a prompt must do when a signal ended it: its state unwound first.
struct Interrupted {
    int signo;
};

// The signals above caught for the time of a prompt, and a pipe that is
// readable whenever one was caught.
class PromptSignals {
public:
    PromptSignals() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
            throw_errno("pipe");
        }
        read_end_.reset(fds[0]);
        write_end_.reset(fds[1]);
        g_caught = 0;
        g_wake_fd = write_end_.get();
        std::memset(&catcher_, 0, sizeof catcher_);
        catcher_.sa_handler = note_signal;
        ::sigfillset(&catcher_.sa_mask);
        catcher_.sa_flags = 0; // no SA_RESTART: a blocked call returns EINTR
        sigset_t unblock;
        ::sigemptyset(&unblock);
        for (std::size_t i = 0; i < kHandled.size(); ++i) {
            const int signo = kHandled[i];
            ::sigaction(signo, nullptr, &saved_[i]);
            // An ignored SIGINT, SIGTSTP, ... stays ignored (nohup, a
            // shell's trap ''). The job control ones are caught whatever
            // the caller said: the prompt must not touch the terminal from
            // the background.
            const bool job_control = signo == SIGTTIN || signo == SIGTTOU || signo == SIGCONT;
            if (saved_[i].sa_handler == SIG_IGN && !job_control) {
                continue;
            }
            ::sigaction(signo, &catcher_, nullptr);
            caught_ |= bit(signo);
            ::sigaddset(&unblock, signo);
        }
        ::pthread_sigmask(SIG_UNBLOCK, &unblock, &saved_mask_);
    }
    PromptSignals(const PromptSignals&) = delete;
    PromptSignals& operator=(const PromptSignals&) = delete;
    // A signal caught and not acted on (one that came as an error ended the
    // prompt) is raised again, now that the caller's disposition is back.
    ~PromptSignals() {
        for (std::size_t i = 0; i < kHandled.size(); ++i) {
            if ((caught_ & bit(kHandled[i])) != 0) {
                ::sigaction(kHandled[i], &saved_[i], nullptr);
            }
        }
        ::pthread_sigmask(SIG_SETMASK, &saved_mask_, nullptr);
        g_wake_fd = -1;
        const SignalSet left = g_caught.exchange(0) & caught_;
        for (int signo : kHandled) {
            if (signo != SIGCONT && (left & bit(signo)) != 0) {
                ::raise(signo);
            }
        }
    }

    int wake_fd() const noexcept { return read_end_.get(); }

    // The signals caught since the last call; empties the pipe.
    SignalSet take() noexcept {
        drain();
        return g_caught.exchange(0);
    }

    unsigned continued() const noexcept { return g_continued.load(); }

    // Stops this process (with `group`, its whole process group, as the
    // terminal stops a background group) by signo's default action, and
    // returns once continued, or at once when the kernel does not stop an
    // orphaned process group. Whether a SIGCONT came: continued().
    void stop(int signo, bool group) noexcept {
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        ::sigaction(signo, &dfl, nullptr);
        ::kill(group ? 0 : ::getpid(), signo);
        ::sigaction(signo, &catcher_, nullptr);
    }

    // Waits up to `ms` for a SIGCONT after `before` (continued()).
    bool continued_since(unsigned before, int ms) const noexcept {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (continued() == before) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) {
                return false;
            }
            pollfd p{read_end_.get(), POLLIN, 0};
            ::poll(&p, 1, static_cast<int>(left.count()) + 1);
            drain(); // what was caught stays in pending()
        }
        return true;
    }

    // Whether a signal was caught that take() has not returned yet.
    bool pending() const noexcept { return g_caught.load() != 0; }

private:
    void drain() const noexcept {
        char bytes[64];
        while (::read(read_end_.get(), bytes, sizeof bytes) > 0) {
        }
    }

    Fd read_end_;
    Fd write_end_;
    struct sigaction catcher_ {};
    std::array<struct sigaction, kHandled.size()> saved_{};
    sigset_t saved_mask_{};
    SignalSet caught_ = 0;
};

bool foreground(int tty) noexcept {
    return ::tcgetpgrp(tty) == ::getpgrp();
}

bool same_settings(const termios& a, const termios& b) noexcept {
    return a.c_iflag == b.c_iflag && a.c_oflag == b.c_oflag && a.c_cflag == b.c_cflag &&
           a.c_lflag == b.c_lflag && std::memcmp(a.c_cc, b.c_cc, sizeof a.c_cc) == 0;
}

// The terminal without echo, for one question; the settings it had are put
// back by restore() or the destructor, in the foreground only.
class QuietTerminal {
public:
    explicit QuietTerminal(int tty) noexcept : tty_(tty) {}
    QuietTerminal(const QuietTerminal&) = delete;
    QuietTerminal& operator=(const QuietTerminal&) = delete;
    ~QuietTerminal() { restore(); }

    // Call in the foreground. Saves the settings and turns echo off; false
    // when a signal came first (nothing changed: see PromptSignals).
    bool engage() {
        if (::tcgetattr(tty_, &saved_) != 0) {
            throw_errno("cannot read the terminal's settings");
        }
        quiet_ = saved_;
        quiet_.c_lflag &= ~static_cast<tcflag_t>(ECHO | ECHONL);
        quiet_.c_lflag |= ICANON | ISIG;
        quiet_.c_iflag &= ~static_cast<tcflag_t>(INLCR | IGNCR);
        quiet_.c_iflag |= ICRNL;
        // TCSAFLUSH: what was typed before, with echo on, is discarded.
        if (::tcsetattr(tty_, TCSAFLUSH, &quiet_) != 0) {
            if (errno == EINTR) {
                return false;
            }
            throw_errno("cannot turn echo off on the terminal");
        }
        engaged_ = true;
        termios now{};
        if (::tcgetattr(tty_, &now) != 0 || (now.c_lflag & ECHO) != 0 ||
            (now.c_lflag & ICANON) == 0) {
            restore();
            throw Error(ErrorCode::io, "cannot turn echo off on the terminal");
        }
        quiet_ = now;
        return true;
    }

    // In the foreground, with the settings engage() made.
    bool in_force() const noexcept {
        termios now{};
        return engaged_ && foreground(tty_) && ::tcgetattr(tty_, &now) == 0 &&
               same_settings(now, quiet_);
    }

    // Puts the saved settings back, unless the terminal is no longer ours
    // (in the background, whoever has it set it up for themselves). What
    // was typed and not read is discarded: a part of a passphrase never
    // reaches the next program to read the terminal.
    void restore() noexcept {
        if (!engaged_) {
            return;
        }
        engaged_ = false;
        for (int tries = 0; tries < 3 && foreground(tty_); ++tries) {
            if (::tcsetattr(tty_, TCSAFLUSH, &saved_) == 0 || errno != EINTR) {
                break;
            }
        }
    }

private:
    int tty_;
    termios saved_{};
    termios quiet_{};
    bool engaged_ = false;
};

class TerminalPrompt {
public:
    explicit TerminalPrompt(int tty) : tty_(tty) {
        // Reads that never block: the pipe and the terminal are polled
        // together. Our own open file description: nobody else sees it.
        const int flags = ::fcntl(tty_, F_GETFL);
        if (flags < 0 || ::fcntl(tty_, F_SETFL, flags | O_NONBLOCK) != 0) {
            throw_errno("cannot set up /dev/tty");
        }
    }

    // One answer, without its line ending.
    SecureBuffer ask(const std::string& prompt) {
        for (;;) {
            wait_for_foreground();
            QuietTerminal quiet(tty_);
            if (!quiet.engage()) {
                on_signals(quiet);
                continue;
            }
            if (!write_all(prompt, quiet)) {
                continue;
            }
            auto answer = read_answer(quiet);
            if (!answer) {
                continue;
            }
            const char newline = '\n'; // Enter was not echoed
            [[maybe_unused]] const auto n = ::write(tty_, &newline, 1);
            return std::move(*answer);
        }
    }

    // Acts on a signal that came after the last answer was read (the
    // terminal is restored by then).
    void finish() {
        QuietTerminal none(tty_);
        on_signals(none);
    }

private:
    enum class Next { go_on, ask_again };

    // Acts on the signals caught: throws Interrupted for an ending one;
    // stops for a stop signal, after restoring the terminal.
    Next on_signals(QuietTerminal& quiet) {
        const SignalSet caught = signals_.take();
        for (int signo : kEndSignals) {
            if ((caught & bit(signo)) != 0) {
                throw Interrupted{signo};
            }
        }
        for (int signo : kStopSignals) {
            if ((caught & bit(signo)) != 0) {
                quiet.restore();
                signals_.stop(signo, false);
                return Next::ask_again;
            }
        }
        if ((caught & bit(SIGCONT)) != 0 && !quiet.in_force()) {
            return Next::ask_again;
        }
        return Next::go_on;
    }

    // Returns in the foreground. In the background, stops the process
    // group (SIGTTOU, as the terminal would on tcsetattr) until a shell's
    // fg continues it there.
    void wait_for_foreground() {
        for (;;) {
            const pid_t owner = ::tcgetpgrp(tty_);
            if (owner == ::getpgrp()) {
                return;
            }
            if (owner <= 0) { // hung up, or no longer our controlling terminal
                throw Error(ErrorCode::io, "cannot ask for the passphrase: the terminal has no "
                                           "foreground process group");
            }
            const SignalSet caught = signals_.take();
            for (int signo : kEndSignals) {
                if ((caught & bit(signo)) != 0) {
                    throw Interrupted{signo};
                }
            }
            const unsigned before = signals_.continued();
            signals_.stop(SIGTTOU, true);
            if (!signals_.continued_since(before, 1000)) {
                throw Error(ErrorCode::usage,
                            "cannot ask for the passphrase: the terminal belongs to another "
                            "process group, and nothing (no job-control shell) can bring this "
                            "one to the foreground; use --passphrase-file");
            }
        }
    }

    // Waits until the terminal is ready for `events`: true, or false when a
    // signal came (see on_signals).
    bool wait(short events) {
        pollfd fds[2] = {{tty_, events, 0}, {signals_.wake_fd(), POLLIN, 0}};
        for (;;) {
            if (signals_.pending()) {
                return false;
            }
            const int n = ::poll(fds, 2, -1);
            if (n < 0 && errno != EINTR) {
                throw_errno("poll /dev/tty");
            }
            if (n < 0 || (fds[1].revents & POLLIN) != 0) {
                return false;
            }
            if (fds[0].revents != 0) {
                return true;
            }
        }
    }

    // false: ask again.
    bool write_all(std::string_view text, QuietTerminal& quiet) {
        while (!text.empty()) {
            const ssize_t n = ::write(tty_, text.data(), text.size());
            if (n >= 0) {
                text.remove_prefix(static_cast<std::size_t>(n));
                continue;
            }
            if (errno != EAGAIN && errno != EINTR) {
                throw_errno("cannot write to /dev/tty");
            }
            if (!wait(POLLOUT) && on_signals(quiet) == Next::ask_again) {
                return false;
            }
        }
        return true;
    }

    // The line typed, read straight into the buffer a byte at a time (no
    // copy of it is left anywhere), up to Enter (a newline, or a carriage
    // return should the terminal pass one on) or the end of input
    // (Ctrl-D). Empty when the question must be asked again.
    std::optional<SecureBuffer> read_answer(QuietTerminal& quiet) {
        SecureBuffer buf(kMaxPassphrase + 1);
        std::size_t got = 0;
        for (;;) {
            if (!wait(POLLIN)) {
                if (on_signals(quiet) == Next::ask_again) {
                    return std::nullopt;
                }
                continue;
            }
            const ssize_t n = ::read(tty_, buf.data() + got, 1);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    continue; // a signal is in the pipe
                }
                if (errno == EIO && !foreground(tty_)) {
                    return std::nullopt; // put in the background meanwhile
                }
                throw_errno("cannot read the passphrase from the terminal");
            }
            if (n == 0) {
                break;
            }
            const auto c = buf.data()[got];
            if (c == '\n' || c == '\r') {
                buf.data()[got] = 0;
                break;
            }
            if (++got == buf.size()) {
                throw Error(ErrorCode::limit, "passphrase from the terminal is longer than " +
                                                  std::to_string(kMaxPassphrase) + " bytes");
            }
        }
        buf.truncate(got);
        return buf;
    }

    int tty_;
    PromptSignals signals_;
};

// Dies of `signo` as the caller's disposition has it (the default: the
// process ends as if the prompt had not caught it). A caller that handles
// it itself gets an error instead.
[[noreturn]] void die_of(int signo) {
    ::raise(signo);
    throw Error(ErrorCode::usage, std::string("passphrase prompt interrupted by SIG") +
                                      (::sigabbrev_np(signo) ? ::sigabbrev_np(signo) : "?"));
}

} // namespace

SecureBuffer prompt_passphrase(const std::string& prompt, bool confirm) {
    int interrupted_by = 0;
    try {
        Fd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY));
        if (!tty) {
            throw NoTerminal("no terminal to ask for the passphrase on; use --passphrase-file");
        }
        TerminalPrompt terminal(tty.get());
        auto first = terminal.ask(prompt);
        if (first.empty()) {
            throw Error(ErrorCode::usage, "empty passphrase from the terminal");
        }
        if (confirm) {
            auto second = terminal.ask("Again: ");
            if (first.size() != second.size() ||
                !constant_time_equal(first.data(), second.data(), first.size())) {
                throw Error(ErrorCode::usage, "the two passphrases differ");
            }
        }
        terminal.finish();
        return first;
    } catch (const Interrupted& e) {
        // The terminal is restored, the passphrases wiped, the signals
        // handled as before the prompt.
        interrupted_by = e.signo;
    }
    die_of(interrupted_by);
}

} // namespace preloadrun
