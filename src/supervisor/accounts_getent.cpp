// The user database for a statically linked preloadrun (see
// preloadrun/common/accounts.hpp for why): the four lookups of accounts.hpp,
// defined here so that the program never pulls glibc's NSS from the archive.
#include "accounts_getent.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/log.hpp"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <memory>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

namespace preloadrun::accounts::getent {

namespace {

constexpr std::size_t kMaxOutput = std::size_t{1} << 20;
constexpr std::size_t kChildStack = 64 * 1024;

std::string_view trim(std::string_view text) {
    const auto first = text.find_first_not_of(" \t\r");
    if (first == std::string_view::npos) {
        return {};
    }
    const auto last = text.find_last_not_of(" \t\r");
    return text.substr(first, last - first + 1);
}

// The colon-separated fields of one line.
std::vector<std::string_view> fields_of(std::string_view line) {
    std::vector<std::string_view> fields;
    while (true) {
        const auto colon = line.find(':');
        fields.push_back(line.substr(0, colon));
        if (colon == std::string_view::npos) {
            return fields;
        }
        line.remove_prefix(colon + 1);
    }
}

// Takes the first line off `text` (without its newline).
std::string_view take_line(std::string_view& text) {
    const auto newline = text.find('\n');
    const auto line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    return line;
}

// The fields of an entry line with at least `count` fields and a name;
// nullopt for a blank line, a comment, a NIS "+"/"-" entry or a short one.
std::optional<std::vector<std::string_view>> entry_fields(std::string_view line,
                                                          std::size_t count) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == '+' || line[0] == '-') {
        return std::nullopt;
    }
    auto fields = fields_of(line);
    if (fields.size() < count || fields[0].empty()) {
        return std::nullopt;
    }
    return fields;
}

template <typename Entry, typename Parse>
std::optional<Entry> find_in(std::string_view text, const Key& key, Parse parse,
                             std::uint32_t Entry::*id) {
    while (!text.empty()) {
        if (auto entry = parse(take_line(text))) {
            if (key.by_id ? (*entry).*id == key.id : entry->name == key.name) {
                return entry;
            }
        }
    }
    return std::nullopt;
}

// The text of a file, nullopt when it cannot be read (getent then answers).
std::optional<std::string> read_database(const std::string& path) {
    try {
        return read_text_file(path);
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

bool ask_files_first(const Sources& sources, Database database) {
    try {
        return files_first(read_text_file(sources.nsswitch), database);
    } catch (const Error& error) {
        // No nsswitch.conf: glibc asks files alone.
        return error.code() == ErrorCode::not_found;
    } catch (const std::exception&) {
        return false;
    }
}

int above_stdio(int fd) {
    if (fd < 0 || fd > 2) {
        return fd;
    }
    const int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
    ::close(fd);
    return moved;
}

struct ChildArgs {
    const char* path;
    char* const* argv;
    char* const* envp;
    int out;
    int null_fd;
    int exec_errno; // set by the child when its exec fails (shared memory)
};

// In the child (same memory as the parent, which waits until the exec): only
// system calls. Every signal back to its default, the mask emptied, stdout on
// the pipe, stdin and stderr on /dev/null, nothing else open.
int child_main(void* raw) {
    auto* args = static_cast<ChildArgs*>(raw);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction old {};
        if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler != SIG_DFL) {
            ::sigaction(sig, &dfl, nullptr);
        }
    }
    sigset_t empty;
    ::sigemptyset(&empty);
    if (::dup2(args->out, STDOUT_FILENO) < 0 || ::dup2(args->null_fd, STDIN_FILENO) < 0 ||
        ::dup2(args->null_fd, STDERR_FILENO) < 0) {
        args->exec_errno = errno;
        ::_exit(127);
    }
    ::close_range(3, ~0U, 0);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    ::execve(args->path, args->argv, args->envp);
    args->exec_errno = errno;
    ::_exit(127);
}

// Reaps the child, unless preloadrun's reaper (a waitpid(-1) on SIGCHLD) got
// it first: through its pidfd where there is one, so that a pid used again
// since is never waited for.
void reap(pid_t pid, int pidfd) {
    if (pidfd >= 0) {
        siginfo_t info{};
        while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) <
                   0 &&
               errno == EINTR) {
        }
        ::close(pidfd);
        return;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

std::string key_text(const Key& key) {
    return key.by_id ? std::to_string(key.id) : key.name;
}

// The entry for `key`: from the file when nsswitch.conf asks it first and it
// has the entry, else getent's answer, checked: getent takes a numeric key as
// an id, so a name made of digits must come back as that name.
template <typename Entry, typename Parse>
std::optional<Entry> find(const Sources& sources, Database database, const std::string& file,
                          const Key& key, Parse parse, std::uint32_t Entry::*id) {
    if (ask_files_first(sources, database)) {
        if (auto text = read_database(file)) {
            if (auto entry = find_in<Entry>(*text, key, parse, id)) {
                return entry;
            }
        }
    }
    const auto output = run_getent(sources.getent, database, key_text(key));
    if (!output) {
        return std::nullopt;
    }
    return find_in<Entry>(*output, key, parse, id);
}

void warn_once_unrunnable(const std::string& getent) {
    static std::atomic<bool> warned{false};
    if (!warned.exchange(true)) {
        log::get("supervisor")
            ->warn("cannot run {}: users and groups that are not in /etc/passwd and /etc/group "
                   "are not found",
                   getent);
    }
}

} // namespace

bool files_first(std::string_view nsswitch, Database database) {
    const std::string_view wanted = database == Database::passwd ? "passwd" : "group";
    while (!nsswitch.empty()) {
        auto line = take_line(nsswitch);
        line = line.substr(0, line.find('#'));
        const auto colon = line.find(':');
        if (colon == std::string_view::npos || trim(line.substr(0, colon)) != wanted) {
            continue;
        }
        auto sources = trim(line.substr(colon + 1));
        const auto end = sources.find_first_of(" \t[");
        return sources.substr(0, end) == "files";
    }
    return true;
}

std::optional<User> parse_passwd_line(std::string_view line) {
    const auto fields = entry_fields(line, 4);
    const auto uid = fields ? parse_id((*fields)[2]) : std::nullopt;
    const auto gid = fields ? parse_id((*fields)[3]) : std::nullopt;
    if (!uid || !gid) {
        return std::nullopt;
    }
    return User{std::string((*fields)[0]), *uid, *gid,
                fields->size() > 5 ? std::string((*fields)[5]) : std::string()};
}

std::optional<Group> parse_group_line(std::string_view line) {
    const auto fields = entry_fields(line, 3);
    const auto gid = fields ? parse_id((*fields)[2]) : std::nullopt;
    if (!gid) {
        return std::nullopt;
    }
    return Group{std::string((*fields)[0]), *gid};
}

std::optional<User> find_in_passwd(std::string_view text, const Key& key) {
    return find_in<User>(text, key, parse_passwd_line, &User::uid);
}

std::optional<Group> find_in_group(std::string_view text, const Key& key) {
    return find_in<Group>(text, key, parse_group_line, &Group::gid);
}

std::optional<std::string> run_getent(const std::string& getent, Database database,
                                      const std::string& key) {
    if (::access(getent.c_str(), X_OK) != 0) {
        warn_once_unrunnable(getent);
        return std::nullopt;
    }
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
        return std::nullopt;
    }
    Fd read_end(above_stdio(pipe_fds[0]));
    Fd write_end(above_stdio(pipe_fds[1]));
    Fd null_fd(above_stdio(::open("/dev/null", O_RDWR | O_CLOEXEC)));
    if (!read_end || !write_end || !null_fd) {
        return std::nullopt;
    }
    std::string database_name = database == Database::passwd ? "passwd" : "group";
    std::string program = "getent";
    std::string dashes = "--";
    std::string key_copy = key;
    char* argv[] = {program.data(), database_name.data(), dashes.data(), key_copy.data(), nullptr};
    std::string locale = "LC_ALL=C";
    char* envp[] = {locale.data(), nullptr};
    ChildArgs args{getent.c_str(), argv, envp, write_end.get(), null_fd.get(), 0};

    // Signals blocked around the clone, so that none runs one of our handlers
    // in the child, which shares our memory until its exec.
    sigset_t all;
    sigset_t old;
    ::sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, &old);
    auto stack = std::make_unique<char[]>(kChildStack);
    // CLONE_VFORK: we go on once the child has exec'd or exited.
    int pidfd = -1;
    pid_t pid = ::clone(child_main, stack.get() + kChildStack,
                        CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &args, &pidfd);
    if (pid < 0 && errno == EINVAL) { // a kernel without pidfds
        pidfd = -1;
        pid =
            ::clone(child_main, stack.get() + kChildStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    write_end.reset();
    null_fd.reset();
    if (pid < 0) {
        return std::nullopt;
    }
    if (args.exec_errno != 0) {
        reap(pid, pidfd);
        warn_once_unrunnable(getent);
        return std::nullopt;
    }
    std::string output;
    char buffer[4096];
    while (output.size() < kMaxOutput) {
        const ssize_t got = ::read(read_end.get(), buffer, sizeof buffer);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            break;
        }
        output.append(buffer, static_cast<std::size_t>(got));
    }
    read_end.reset();
    reap(pid, pidfd);
    // Only whole lines: a getent killed while it wrote left no half entry.
    output.resize(output.rfind('\n') == std::string::npos ? 0 : output.rfind('\n') + 1);
    return output;
}

std::optional<User> find_user(const Sources& sources, const Key& key) {
    return find<User>(sources, Database::passwd, sources.passwd, key, parse_passwd_line,
                      &User::uid);
}

std::optional<Group> find_group(const Sources& sources, const Key& key) {
    return find<Group>(sources, Database::group, sources.group, key, parse_group_line, &Group::gid);
}

} // namespace preloadrun::accounts::getent

namespace preloadrun::accounts {

std::optional<User> user_by_name(const std::string& name) {
    return getent::find_user({}, {false, name, 0});
}

std::optional<User> user_by_uid(uid_t uid) {
    return getent::find_user({}, {true, {}, uid});
}

std::optional<Group> group_by_name(const std::string& name) {
    return getent::find_group({}, {false, name, 0});
}

std::optional<Group> group_by_gid(gid_t gid) {
    return getent::find_group({}, {true, {}, gid});
}

} // namespace preloadrun::accounts
