// probe: a child program for the supervisor tests. It reports what a child
// sees (signal mask, ignored signals, open fds, environment, process group,
// session, the terminal's foreground group), counts the signals it receives,
// makes orphans, and ends the way it is told. Files it writes are replaced
// atomically (write a temporary, rename), so readers never see half a file.
//
//   probe [OPTION...]
//   --report FILE       at start, before anything else: pid, ppid, pgid, sid,
//                       tty_fg, sigblk, sigign (hex from /proc/self/status),
//                       fds (from /proc/self/fd), fd.N=TARGET for each of
//                       them (its /proc/self/fd link), listening (the fds
//                       that are listening sockets), cwd, env=NAME=VALUE lines
//   --count FILE        count TERM INT HUP QUIT USR1 USR2 WINCH CONT ALRM;
//                       FILE is rewritten ("SIGTERM=1" lines) after each one
//   --count-all FILE    block every signal (1-64, 32 and 33 included) and
//                       count each by number as it arrives; FILE is rewritten
//                       ("15=1" lines, the signals received so far) after
//                       each batch, and is empty at first. Not with --count
//                       or --until-signal: end it with --until-file or
//                       --until-line
//   --ready FILE        create FILE once set up
//   --print-ready       print "READY <pid>" on stdout once set up
//   --orphans N         make N orphans: grandchildren whose parent has
//                       exited; they exit when this probe exits
//   --until-file FILE   run until FILE exists
//   --until-line        run until a line arrives on stdin; print "GOT line"
//                       (reads when poll() says there is input)
//   --eager-read        ... reads at once (blocking), from the background too
//   --read-after FILE   ... reads (blocking) once FILE exists
//   --until-signal SIG  run until SIG (a name: INT, WINCH...) arrives, wait
//                       --grace-ms (default 300) for duplicates, then die of
//                       it (default disposition) unless --exit/--die is given
//   --sleep-ms N        run for at most N ms (default: 30000 with an --until-*
//                       option, else 0: report, count setup, orphans, end)
//   --exit N            exit with status N (default 0)
//   --die SIG           end by dying of SIG
// Ends as soon as any --until-* condition holds.

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <optional>
#include <poll.h>
#include <signal.h>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace {

constexpr std::array kCounted = {SIGTERM, SIGINT,   SIGHUP,  SIGQUIT, SIGUSR1,
                                 SIGUSR2, SIGWINCH, SIGCONT, SIGALRM};

int g_signal_pipe[2] = {-1, -1};

void on_signal(int signo) {
    const int saved = errno;
    const auto byte = static_cast<unsigned char>(signo);
    [[maybe_unused]] auto n = ::write(g_signal_pipe[1], &byte, 1);
    errno = saved;
}

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "probe: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(99);
}

[[noreturn]] void usage(const std::string& what) {
    std::fprintf(stderr, "probe: %s\n", what.c_str());
    std::exit(98);
}

int parse_signal(const std::string& name) {
    std::string n = name.rfind("SIG", 0) == 0 ? name.substr(3) : name;
    for (int signo = 1; signo < NSIG; ++signo) {
        const char* abbrev = ::sigabbrev_np(signo);
        if (abbrev != nullptr && n == abbrev) {
            return signo;
        }
    }
    usage("unknown signal " + name);
}

std::string signal_name(int signo) {
    const char* abbrev = ::sigabbrev_np(signo);
    return std::string("SIG") + (abbrev != nullptr ? abbrev : "?");
}

void write_file(const std::string& path, const std::string& text) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << text;
        if (!out) {
            fail("write " + tmp);
        }
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        fail("rename " + tmp);
    }
}

std::string status_field(const std::string& name) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + ":", 0) == 0) {
            std::string value = line.substr(name.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    }
    return "?";
}

std::vector<int> open_fds() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) {
        fail("opendir /proc/self/fd");
    }
    std::vector<int> fds;
    while (const dirent* entry = ::readdir(dir)) {
        if (entry->d_name[0] == '.') {
            continue;
        }
        const int fd = std::atoi(entry->d_name);
        if (fd != ::dirfd(dir)) {
            fds.push_back(fd);
        }
    }
    ::closedir(dir);
    std::sort(fds.begin(), fds.end());
    return fds;
}

std::string join(const std::vector<int>& numbers) {
    std::string text;
    for (int n : numbers) {
        text += (text.empty() ? "" : ",") + std::to_string(n);
    }
    return text;
}

std::string fd_target(int fd) {
    const std::string link = "/proc/self/fd/" + std::to_string(fd);
    char target[4096] = {};
    const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    return n < 0 ? "?" : std::string(target, static_cast<std::size_t>(n));
}

bool is_listening_socket(int fd) {
    struct stat st {};
    int accepting = 0;
    socklen_t len = sizeof accepting;
    return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) &&
           ::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) == 0 && accepting != 0;
}

pid_t tty_foreground() {
    const int fd = ::open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    const pid_t pgrp = ::tcgetpgrp(fd);
    ::close(fd);
    return pgrp;
}

void write_report(const std::string& path) {
    // Gathered before anything else opens a file or touches a signal.
    const std::vector<int> fds = open_fds();
    std::vector<std::string> targets;
    std::vector<int> listening;
    for (int fd : fds) {
        targets.push_back(fd_target(fd));
        if (is_listening_socket(fd)) {
            listening.push_back(fd);
        }
    }
    const std::string sigblk = status_field("SigBlk");
    const std::string sigign = status_field("SigIgn");
    std::ostringstream out;
    out << "pid=" << ::getpid() << "\nppid=" << ::getppid() << "\npgid=" << ::getpgrp()
        << "\nsid=" << ::getsid(0) << "\ntty_fg=" << tty_foreground() << "\nsigblk=" << sigblk
        << "\nsigign=" << sigign << "\nfds=" << join(fds) << "\n";
    for (std::size_t i = 0; i < fds.size(); ++i) {
        out << "fd." << fds[i] << "=" << targets[i] << "\n";
    }
    out << "listening=" << join(listening) << "\n";
    char cwd[4096] = {};
    if (::getcwd(cwd, sizeof cwd) != nullptr) {
        out << "cwd=" << cwd << "\n";
    }
    for (char** e = environ; *e != nullptr; ++e) {
        out << "env=" << *e << "\n";
    }
    write_file(path, out.str());
}

void write_counts(const std::string& path, const std::map<int, int>& counts) {
    std::string text;
    for (const auto& [signo, n] : counts) {
        text += signal_name(signo) + "=" + std::to_string(n) + "\n";
    }
    write_file(path, text);
}

void make_orphans(int count, int& release_fd) {
    int release[2];
    if (::pipe2(release, O_CLOEXEC) != 0) {
        fail("pipe");
    }
    for (int i = 0; i < count; ++i) {
        const pid_t middle = ::fork();
        if (middle < 0) {
            fail("fork");
        }
        if (middle == 0) {
            if (::fork() == 0) {
                // The orphan: waits for the probe to exit (EOF), then exits.
                ::close(release[1]);
                char c;
                while (::read(release[0], &c, 1) < 0 && errno == EINTR) {
                }
                ::_exit(0);
            }
            ::_exit(0);
        }
        int status = 0;
        while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
        }
    }
    ::close(release[0]);
    release_fd = release[1];
}

// Counts the signals noted by the handler since the last call; rewrites the
// count file when there were any. Returns whether there were.
bool drain_signals(std::map<int, int>& counts, const std::optional<std::string>& file) {
    unsigned char sigs[64];
    ssize_t got = 0;
    bool any = false;
    while ((got = ::read(g_signal_pipe[0], sigs, sizeof sigs)) > 0) {
        for (ssize_t i = 0; i < got; ++i) {
            ++counts[sigs[i]];
        }
        any = true;
    }
    if (any && file) {
        write_counts(*file, counts);
    }
    return any;
}

// --count-all: every signal but KILL and STOP (the kernel leaves those
// out of both masks), by number. glibc's sigset functions refuse 32 and 33
// (its own), so the mask is the kernel's 64-bit one, set by raw system calls.
int block_all_signals_on_a_signalfd() {
    const std::uint64_t all = ~std::uint64_t{0};
    if (::syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, nullptr, sizeof all) != 0) {
        fail("rt_sigprocmask");
    }
    const long fd = ::syscall(SYS_signalfd4, -1, &all, sizeof all, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) {
        fail("signalfd4");
    }
    return static_cast<int>(fd);
}

void write_counts_by_number(const std::string& path, const std::map<int, int>& counts) {
    std::string text;
    for (const auto& [signo, n] : counts) {
        text += std::to_string(signo) + "=" + std::to_string(n) + "\n";
    }
    write_file(path, text);
}

// Counts what the signalfd holds; rewrites the file when there was any.
void drain_signalfd(int fd, std::map<int, int>& counts, const std::string& file) {
    signalfd_siginfo info[16];
    bool any = false;
    for (;;) {
        const ssize_t got = ::read(fd, info, sizeof info);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            break;
        }
        for (std::size_t i = 0; i < static_cast<std::size_t>(got) / sizeof info[0]; ++i) {
            ++counts[static_cast<int>(info[i].ssi_signo)];
        }
        any = true;
    }
    if (any) {
        write_counts_by_number(file, counts);
    }
}

// Reads what is there (blocking); true once a line is complete or at EOF,
// then prints "GOT line".
bool read_line(std::string& line) {
    char buf[256];
    const ssize_t r = ::read(STDIN_FILENO, buf, sizeof buf);
    if (r < 0) {
        return errno != EINTR && errno != EAGAIN;
    }
    if (r == 0) {
        return true; // EOF: end as if a line came
    }
    line.append(buf, static_cast<std::size_t>(r));
    const auto nl = line.find('\n');
    if (nl == std::string::npos) {
        return false;
    }
    line.resize(nl);
    if (!line.empty() && line.back() == '\r') {
        line.pop_back();
    }
    std::printf("GOT %s\n", line.c_str());
    std::fflush(stdout);
    return true;
}

struct Options {
    std::optional<std::string> report, count, count_all, ready, until_file, read_after;
    bool print_ready = false;
    bool until_line = false;
    bool eager_read = false;
    int until_signal = 0;
    int grace_ms = 300;
    int sleep_ms = -1;
    int orphans = 0;
    int exit_status = 0;
    int die = 0;
    bool ending_given = false;
};

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) {
                usage(arg + " needs a value");
            }
            return argv[++i];
        };
        if (arg == "--report") {
            o.report = value();
        } else if (arg == "--count") {
            o.count = value();
        } else if (arg == "--count-all") {
            o.count_all = value();
        } else if (arg == "--ready") {
            o.ready = value();
        } else if (arg == "--print-ready") {
            o.print_ready = true;
        } else if (arg == "--orphans") {
            o.orphans = std::stoi(value());
        } else if (arg == "--until-file") {
            o.until_file = value();
        } else if (arg == "--until-line") {
            o.until_line = true;
        } else if (arg == "--read-after") {
            o.read_after = value();
        } else if (arg == "--eager-read") {
            o.eager_read = true;
        } else if (arg == "--until-signal") {
            o.until_signal = parse_signal(value());
        } else if (arg == "--grace-ms") {
            o.grace_ms = std::stoi(value());
        } else if (arg == "--sleep-ms") {
            o.sleep_ms = std::stoi(value());
        } else if (arg == "--exit") {
            o.exit_status = std::stoi(value());
            o.ending_given = true;
        } else if (arg == "--die") {
            o.die = parse_signal(value());
            o.ending_given = true;
        } else {
            usage("unknown option " + arg);
        }
    }
    if (o.count_all && (o.count || o.until_signal != 0)) {
        usage("--count-all blocks every signal: not with --count or --until-signal");
    }
    if (o.sleep_ms < 0) {
        o.sleep_ms = (o.until_file || o.until_line || o.until_signal != 0) ? 30000 : 0;
    }
    return o;
}

bool exists(const std::string& path) {
    return ::access(path.c_str(), F_OK) == 0;
}

} // namespace

int main(int argc, char** argv) {
    const Options o = parse(argc, argv);
    if (o.report) {
        write_report(*o.report);
    }

    std::map<int, int> counts;
    if (::pipe2(g_signal_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        fail("pipe");
    }
    if (o.count || o.until_signal != 0) {
        std::vector<int> handled(kCounted.begin(), kCounted.end());
        if (o.until_signal != 0) {
            handled.push_back(o.until_signal);
        }
        for (int signo : handled) {
            struct sigaction sa {};
            sa.sa_handler = on_signal;
            sa.sa_flags = SA_RESTART;
            ::sigemptyset(&sa.sa_mask);
            if (::sigaction(signo, &sa, nullptr) != 0) {
                fail("sigaction");
            }
            counts[signo] = 0;
        }
        if (o.count) {
            write_counts(*o.count, counts);
        }
    }
    std::map<int, int> counts_by_number;
    int all_signals_fd = -1;
    if (o.count_all) {
        all_signals_fd = block_all_signals_on_a_signalfd();
        write_counts_by_number(*o.count_all, counts_by_number);
    }
    int release_fd = -1;
    if (o.orphans > 0) {
        make_orphans(o.orphans, release_fd);
    }
    if (o.ready) {
        write_file(*o.ready, std::to_string(::getpid()) + "\n");
    }
    if (o.print_ready) {
        std::printf("READY %d\n", static_cast<int>(::getpid()));
        std::fflush(stdout);
    }

    using Clock = std::chrono::steady_clock;
    auto deadline = Clock::now() + std::chrono::milliseconds(o.sleep_ms);
    bool got_until_signal = false;
    std::string line;
    for (;;) {
        if (o.until_file && exists(*o.until_file)) {
            break;
        }
        const auto now = Clock::now();
        if (now >= deadline) {
            break;
        }
        // Reading stdin: once --read-after's file exists (if given); at once
        // and blocking with --eager-read or --read-after (from the
        // background that stops the probe with SIGTTIN, as it would any
        // program), else when poll() says there is input.
        const bool reading = o.until_line && (!o.read_after || exists(*o.read_after));
        if (reading && (o.eager_read || o.read_after)) {
            if (read_line(line)) {
                break;
            }
            drain_signals(counts, o.count);
            if (all_signals_fd >= 0) {
                drain_signalfd(all_signals_fd, counts_by_number, *o.count_all);
            }
            continue;
        }
        // poll() skips a negative fd: the signalfd is there with --count-all.
        pollfd fds[3] = {
            {g_signal_pipe[0], POLLIN, 0}, {all_signals_fd, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
        const nfds_t nfds = reading ? 3 : 2;
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
        const int n = ::poll(fds, nfds, static_cast<int>(std::min<long long>(left, 20)) + 1);
        if (n < 0 && errno != EINTR) {
            fail("poll");
        }
        if (drain_signals(counts, o.count) && !got_until_signal && o.until_signal != 0 &&
            counts[o.until_signal] > 0) {
            got_until_signal = true;
            deadline = Clock::now() + std::chrono::milliseconds(o.grace_ms);
        }
        if (all_signals_fd >= 0) {
            drain_signalfd(all_signals_fd, counts_by_number, *o.count_all);
        }
        if (reading && n > 0 && (fds[2].revents & (POLLIN | POLLHUP)) != 0 && read_line(line)) {
            break;
        }
    }
    drain_signals(counts, o.count);
    if (o.count) {
        write_counts(*o.count, counts);
    }
    if (all_signals_fd >= 0) {
        drain_signalfd(all_signals_fd, counts_by_number, *o.count_all);
    }
    if (release_fd >= 0) {
        ::close(release_fd); // the orphans exit now
    }
    int die = o.die;
    if (got_until_signal && !o.ending_given) {
        die = o.until_signal;
    }
    if (die != 0) {
        const rlimit no_core{0, 0};
        ::setrlimit(RLIMIT_CORE, &no_core);
        ::signal(die, SIG_DFL);
        sigset_t set;
        ::sigemptyset(&set);
        ::sigaddset(&set, die);
        ::sigprocmask(SIG_UNBLOCK, &set, nullptr);
        ::raise(die);
        ::_exit(97); // a signal whose default action is not to terminate
    }
    return o.exit_status;
}
