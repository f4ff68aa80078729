#include "core/spawn.hpp"

#include "core/signals.hpp"
#include "preloadrun/common/error.hpp"

// Boost 1.81 needs these before the process headers (TOOLCHAIN.md).
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/optional.hpp>
#include <boost/process/v2/posix/vfork_launcher.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/type_traits.hpp>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <signal.h>
#include <string_view>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ; // NOLINT(readability-redundant-declaration)

namespace preloadrun::supervisor {

namespace bp = boost::process::v2;

namespace {

// "No such file or directory" -> "no such file or directory".
std::string errno_text(int err) {
    std::string text = std::strerror(err);
    if (!text.empty()) {
        text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
    }
    return text;
}

[[noreturn]] void throw_not_executable(const std::string& name, int err) {
    throw Error(ErrorCode::permission, name + ": " + errno_text(err));
}

// ---- In the child, between vfork and exec: async-signal-safe calls only ----
// The child shares preloadrun's memory (and runs on its stack) until it
// execs: it writes nothing of preloadrun's but its own stack and the plan's
// LISTEN_PID buffer, which preloadrun no longer reads.

// The caller's dispositions: ignored stays ignored, everything else default
// (a handler would not survive the exec anyway). glibc refuses 32 and 33:
// reset_glibc_signals_in_child() does those.
void restore_caller_dispositions(SignalBits ignored) noexcept {
    struct sigaction act {};
    ::sigemptyset(&act.sa_mask);
    for (int signo = 1; signo <= kLastSignal; ++signo) {
        if (signo != SIGKILL && signo != SIGSTOP) {
            act.sa_handler = (ignored & signal_bit(signo)) != 0 ? SIG_IGN : SIG_DFL;
            ::sigaction(signo, &act, nullptr); // EINVAL for glibc's own: fine
        }
    }
}

void close_range_or_loop(unsigned first, unsigned last) noexcept {
    if (first > last) {
        return;
    }
    if (::syscall(SYS_close_range, first, last, 0U) == 0) {
        return;
    }
    // Kernels before 5.9: close one by one up to the descriptor limit.
    const long max = ::sysconf(_SC_OPEN_MAX);
    const unsigned limit = max > 0 ? static_cast<unsigned>(max) : 65536U;
    for (unsigned fd = first; fd <= last && fd < limit; ++fd) {
        ::close(static_cast<int>(fd));
    }
}

// Closes every fd above 2 except those in `inherited` (the caller's, still
// not close-on-exec: a number preloadrun reused for its own descriptor is
// close-on-exec) and `boost` (Boost's exec-error pipe, close-on-exec). No
// allocation: we are between fork and exec.
void close_fds_except(const std::vector<int>& inherited, const std::vector<int>& boost) noexcept {
    unsigned next = 3;
    for (;;) {
        int lowest = INT_MAX;
        for (const auto* list : {&inherited, &boost}) {
            for (int fd : *list) {
                if (fd >= static_cast<int>(next) && fd < lowest) {
                    lowest = fd;
                }
            }
        }
        if (lowest == INT_MAX) {
            close_range_or_loop(next, ~0U);
            return;
        }
        if (static_cast<unsigned>(lowest) > next) {
            close_range_or_loop(next, static_cast<unsigned>(lowest) - 1);
        }
        const int flags = ::fcntl(lowest, F_GETFD);
        if (flags >= 0 && (flags & FD_CLOEXEC) != 0 &&
            std::find(boost.begin(), boost.end(), lowest) == boost.end()) {
            ::close(lowest); // preloadrun's own, on a number the caller's had
        }
        next = static_cast<unsigned>(lowest) + 1;
    }
}

// Writes `value` in decimal at `out`, NUL-terminated (room for 20 digits).
void write_decimal(char* out, long value) noexcept {
    char digits[24];
    int n = 0;
    do {
        digits[n++] = static_cast<char>('0' + value % 10);
        value /= 10;
    } while (value > 0 && n < 20);
    while (n > 0) {
        *out++ = digits[--n];
    }
    *out = '\0';
}

// What the child runs, prepared in the parent: between fork and exec
// nothing may allocate.
struct ExecPlan {
    const char* executable = nullptr;
    const char* const* argv = nullptr;
    const char* const* sh_argv = nullptr; // "/bin/sh" executable args..., for ENOEXEC
    const char* const* envp = nullptr;
    char* listen_pid = nullptr; // the value of LISTEN_PID=, to become the child's pid
    const std::vector<int>* inherited = nullptr;
    SignalBits ignored = 0;
    pid_t parent = 0;
};

// The Boost.Process initializer: on_exec_setup runs in the child, and execs
// there itself (execve, then /bin/sh on ENOEXEC): Boost's own execve has no
// ENOEXEC rule. Returning an error makes Boost report errno to the parent.
struct ChildSetup {
    SpawnOptions options;
    ExecPlan plan;

    template <class Launcher>
    bp::error_code on_exec_setup(Launcher& launcher, const bp::filesystem::path& /*exe*/,
                                 const char* const* /*argv*/) const {
        // SIGTERM when preloadrun dies before the child, however it dies
        // (SIGKILL, a fault in its own code): nothing runs on unsupervised.
        // preloadrun may have died already, before the prctl.
        if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != plan.parent) {
            ::_exit(kExitPreloadrunFailed);
        }
        // Own process group, so that signals for the child's group (the
        // terminal's) never reach preloadrun. Done here, before exec: the
        // parent does not return from the launch before the exec (Boost's
        // exec-error pipe), so it never sees the child in its own group.
        if (::setpgid(0, 0) != 0) {
            return bp::error_code(errno, bp::system_category());
        }
        // SIGTTOU is still blocked (inherited mask): allowed from the background.
        if (options.give_terminal) {
            ::tcsetpgrp(options.terminal_fd, ::getpid());
        }
        restore_caller_dispositions(plan.ignored);
        reset_glibc_signals_in_child(plan.ignored);
        close_fds_except(*plan.inherited, launcher.fd_whitelist);
        if (plan.listen_pid != nullptr) {
            write_decimal(plan.listen_pid, ::getpid());
        }
        unblock_all_signals();
        ::execve(plan.executable, const_cast<char* const*>(plan.argv),
                 const_cast<char* const*>(plan.envp));
        if (errno == ENOEXEC) {
            ::execve(plan.sh_argv[0], const_cast<char* const*>(plan.sh_argv),
                     const_cast<char* const*>(plan.envp));
            errno = ENOEXEC; // what failed is the file, not /bin/sh
        }
        return bp::error_code(errno, bp::system_category());
    }

    // Boost calls ::exit() in the child when the exec fails, which would run
    // the parent's atexit handlers and flush its stdio buffers a second
    // time. Exit at once instead (the errno has been sent to the parent).
    // Variadic: Boost 1.81 checks for one signature and calls another.
    template <class... Args> void on_exec_error(Args&&... /*unused*/) const {
        ::_exit(kExitPreloadrunFailed);
    }
};

bool is_directory(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

} // namespace

namespace {

std::vector<int>& inherited_list() {
    static std::vector<int> fds;
    return fds;
}

} // namespace

void record_inherited_descriptors() {
    // The candidates: /proc/self/fd lists them; without /proc (a bare
    // container), every number up to the limit.
    std::vector<int> candidates;
    std::error_code ec;
    std::filesystem::directory_iterator it("/proc/self/fd", ec);
    if (!ec) {
        for (; it != std::filesystem::directory_iterator(); it.increment(ec)) {
            candidates.push_back(std::atoi(it->path().filename().c_str()));
        }
    } else {
        const long max = ::sysconf(_SC_OPEN_MAX);
        const int limit = max > 0 && max < 65536 ? static_cast<int>(max) : 65536;
        for (int fd = 3; fd < limit; ++fd) {
            candidates.push_back(fd);
        }
    }
    // The caller's are open and not close-on-exec (the directory
    // iterator's own descriptor is close-on-exec).
    auto& fds = inherited_list();
    fds.clear();
    for (int fd : candidates) {
        const int flags = ::fcntl(fd, F_GETFD);
        if (fd > 2 && flags >= 0 && (flags & FD_CLOEXEC) == 0) {
            fds.push_back(fd);
        }
    }
    std::sort(fds.begin(), fds.end());
}

void consume_inherited_descriptor(int fd) {
    auto& fds = inherited_list();
    fds.erase(std::remove(fds.begin(), fds.end(), fd), fds.end());
}

const std::vector<int>& inherited_descriptors() {
    return inherited_list();
}

std::vector<std::string> child_environment(const ChildSpec& spec) {
    auto removed = [&spec](std::string_view entry) {
        const auto name = entry.substr(0, entry.find('='));
        return std::find(spec.unset_env.begin(), spec.unset_env.end(), name) !=
                   spec.unset_env.end() ||
               std::any_of(spec.set_env.begin(), spec.set_env.end(),
                           [name](const auto& kv) { return kv.first == name; });
    };
    std::vector<std::string> env;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        if (!removed(*e)) {
            env.emplace_back(*e);
        }
    }
    for (const auto& [name, value] : spec.set_env) {
        if (std::find(spec.unset_env.begin(), spec.unset_env.end(), name) == spec.unset_env.end()) {
            env.push_back(name + "=" + value);
        }
    }
    return env;
}

std::string resolve_command(const std::string& name, const char* path) {
    if (name.empty()) {
        throw Error(ErrorCode::not_found, "'': command not found");
    }
    if (name.find('/') != std::string::npos) {
        struct stat st {};
        if (::stat(name.c_str(), &st) != 0) {
            const int err = errno;
            if (err == EACCES) {
                throw_not_executable(name, err);
            }
            throw Error(ErrorCode::not_found, name + ": " + errno_text(err));
        }
        if (S_ISDIR(st.st_mode)) {
            throw_not_executable(name, EISDIR);
        }
        return name; // execve decides about the x bit and the format
    }
    // As glibc's execvp: a candidate that exists but cannot be executed
    // (EACCES: no x bit, a directory) is skipped but remembered.
    std::string_view dirs = path != nullptr ? path : "/bin:/usr/bin";
    bool denied = false;
    for (;;) {
        const auto colon = dirs.find(':');
        std::string dir(dirs.substr(0, colon));
        std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + name;
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0) {
            if (S_ISREG(st.st_mode) &&
                ::faccessat(AT_FDCWD, candidate.c_str(), X_OK, AT_EACCESS) == 0) {
                return candidate;
            }
            denied = true;
        } else if (errno == EACCES) {
            denied = true;
        }
        if (colon == std::string_view::npos) {
            break;
        }
        dirs.remove_prefix(colon + 1);
    }
    if (denied) {
        throw_not_executable(name, EACCES);
    }
    throw Error(ErrorCode::not_found, name + ": command not found");
}

pid_t spawn_child(const ChildSpec& spec, const SpawnOptions& options) {
    if (spec.argv.empty()) {
        throw Error(ErrorCode::usage, "no command to run");
    }
    const std::string& name = spec.argv.front();
    const std::vector<std::string> env = child_environment(spec);
    const char* path = nullptr;
    for (const auto& entry : env) {
        if (entry.rfind("PATH=", 0) == 0) {
            path = entry.c_str() + 5; // the child's PATH, as env(1) does
        }
    }
    const std::string executable = resolve_command(name, path);

    std::vector<const char*> argv;
    argv.reserve(spec.argv.size() + 1);
    for (const auto& arg : spec.argv) {
        argv.push_back(arg.c_str()); // argv[0] as given, not the resolved path
    }
    argv.push_back(nullptr);
    // execvp's rule for a file the kernel cannot execute: /bin/sh FILE ARGS...
    std::vector<const char*> sh_argv{"/bin/sh", executable.c_str()};
    sh_argv.insert(sh_argv.end(), argv.begin() + 1, argv.end());

    std::vector<std::string> child_env = env;
    ExecPlan plan;
    plan.parent = ::getpid();
    plan.ignored = caller_ignored_signals();
    plan.inherited = &inherited_descriptors();
    for (auto& entry : child_env) {
        // Socket activation: the descriptors were for preloadrun (LISTEN_PID
        // is its pid); they are the child's now. Any other value passes as is.
        if (entry == "LISTEN_PID=" + std::to_string(plan.parent)) {
            entry.resize(entry.size() + 24, '\0'); // room for the child's pid
            plan.listen_pid = entry.data() + std::strlen("LISTEN_PID=");
        }
    }
    std::vector<const char*> envp;
    envp.reserve(child_env.size() + 1);
    for (const auto& entry : child_env) {
        envp.push_back(entry.c_str());
    }
    envp.push_back(nullptr);
    plan.executable = executable.c_str();
    plan.argv = argv.data();
    plan.sh_argv = sh_argv.data();
    plan.envp = envp.data();

    // A private io_context only for the launch: Boost wants an executor for
    // the process handle (a pidfd) that we drop right away. vfork, not fork:
    // no page tables to copy and fault back in (a fifth of `preloadrun --
    // true`); it returns once the child exec'd or failed to (`ec`: errno).
    boost::asio::io_context context;
    bp::posix::vfork_launcher launcher;
    launcher.env = envp.data();
    bp::error_code ec;
    const char** argv_data = argv.data();
    auto process = launcher(context.get_executor(), ec, bp::filesystem::path(executable), argv_data,
                            ChildSetup{options, plan});
    if (!ec) {
        const pid_t pid = process.id();
        // Detach: the destructor of an attached process SIGKILLs and reaps
        // it. We reap it ourselves, with waitpid, from the SIGCHLD handling.
        process.detach();
        return pid;
    }

    // The exec failed (or fork did): reap the child that reported it, and
    // take the terminal back if the child had taken it.
    if (launcher.pid > 0) {
        int status = 0;
        while (::waitpid(launcher.pid, &status, 0) < 0 && errno == EINTR) {
        }
        if (options.give_terminal && ::tcgetpgrp(options.terminal_fd) == launcher.pid) {
            ::tcsetpgrp(options.terminal_fd, ::getpgrp());
        }
    }
    const int err = ec.value();
    switch (err) {
    case ENOENT:
    case ENOTDIR:
        if (is_directory(executable)) {
            throw_not_executable(name, EISDIR);
        }
        // The file was there a moment ago: its interpreter or loader is not
        // (127, as env(1)).
        throw Error(ErrorCode::not_found, name + ": bad interpreter or loader: " + errno_text(err));
    case EACCES:
    case EPERM:
    case ENOEXEC:
    case EISDIR:
    case ETXTBSY:
    case ELOOP:
    case ENAMETOOLONG:
    case ELIBBAD:
    case E2BIG:
        throw_not_executable(name, err);
    default:
        throw Error(ErrorCode::internal, "cannot run " + name + ": " + errno_text(err));
    }
}

// The spawn column of error_table.def.
int exit_status_for_spawn_error(const std::exception& error) {
    if (const auto* e = dynamic_cast<const Error*>(&error)) {
        return error_info(e->code()).spawn;
    }
    return kExitPreloadrunFailed;
}
static_assert(error_info(ErrorCode::not_found).spawn == kExitNotFound);
static_assert(error_info(ErrorCode::permission).spawn == kExitNotExecutable);
static_assert(error_info(ErrorCode::internal).spawn == kExitPreloadrunFailed);

} // namespace preloadrun::supervisor
