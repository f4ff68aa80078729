#include "supervisor/spawn.hpp"

#include "preloadrun/common/error.hpp"

// Boost 1.81 needs these before the process headers (TOOLCHAIN.md).
#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/optional.hpp>
#include <boost/process/v2/posix/default_launcher.hpp>
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

// ---- In the child, between fork and exec: async-signal-safe calls only ----

void reset_signal_dispositions() noexcept {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    ::sigemptyset(&dfl.sa_mask);
    for (int signo = 1; signo < NSIG; ++signo) {
        if (signo != SIGKILL && signo != SIGSTOP) {
            ::sigaction(signo, &dfl, nullptr); // EINVAL for glibc's own: fine
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

// Closes every fd above 2 except `keep` (Boost's exec-error pipe, which is
// close-on-exec). Boost 1.81's own close_handles leaves the gaps below the
// highest kept fd open, so this does the job instead; no allocation.
void close_fds_except(const std::vector<int>& keep) noexcept {
    unsigned next = 3;
    for (;;) {
        int lowest = INT_MAX;
        for (int fd : keep) {
            if (fd >= static_cast<int>(next) && fd < lowest) {
                lowest = fd;
            }
        }
        if (lowest == INT_MAX) {
            close_range_or_loop(next, ~0U);
            return;
        }
        if (static_cast<unsigned>(lowest) > next) {
            close_range_or_loop(next, static_cast<unsigned>(lowest) - 1);
        }
        next = static_cast<unsigned>(lowest) + 1;
    }
}

// The Boost.Process initializer: on_exec_setup runs in the child.
struct ChildSetup {
    SpawnOptions options;

    template <class Launcher>
    bp::error_code on_exec_setup(Launcher& launcher, const bp::filesystem::path& /*exe*/,
                                 const char* const* /*argv*/) const {
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
        reset_signal_dispositions();
        close_fds_except(launcher.fd_whitelist);
        sigset_t none;
        ::sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        return {};
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
    std::vector<const char*> envp;
    envp.reserve(env.size() + 1);
    for (const auto& entry : env) {
        envp.push_back(entry.c_str());
    }
    envp.push_back(nullptr);

    // A private io_context only for the launch: Boost wants an executor for
    // the process handle (a pidfd) that we drop right away.
    boost::asio::io_context context;
    bp::posix::default_launcher launcher;
    launcher.env = envp.data();
    bp::error_code ec;
    const char** argv_data = argv.data();
    auto process = launcher(context.get_executor(), ec, bp::filesystem::path(executable), argv_data,
                            ChildSetup{options});
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
        // The file was there a moment ago: its interpreter or loader is not.
        throw Error(ErrorCode::permission,
                    name + ": bad interpreter or loader: " + errno_text(err));
    case EACCES:
    case EPERM:
    case ENOEXEC:
    case EISDIR:
    case ETXTBSY:
    case ELOOP:
    case ENAMETOOLONG:
    case ELIBBAD:
        throw_not_executable(name, err);
    default:
        throw Error(ErrorCode::internal, "cannot run " + name + ": " + errno_text(err));
    }
}

int exit_status_for_spawn_error(const std::exception& error) {
    if (const auto* e = dynamic_cast<const Error*>(&error)) {
        switch (e->code()) {
        case ErrorCode::not_found:
            return kExitNotFound;
        case ErrorCode::permission:
            return kExitNotExecutable;
        default:
            break;
        }
    }
    return kExitPreloadrunFailed;
}

} // namespace preloadrun::supervisor
