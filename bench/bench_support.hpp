#pragma once
// Helpers shared by the benchmarks (bench_*.cpp): child processes with their
// own environment, `hsmsim serve` and its CLI in a private temp directory,
// --name value options, a worker/parent main, and small statistics.
// Header-only: each benchmark is one translation unit.

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace bench_support {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Broken : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// ---- statistics -------------------------------------------------------------------

inline double median(std::vector<double> v) {
    if (v.empty()) {
        return 0.0;
    }
    std::sort(v.begin(), v.end());
    const std::size_t n = v.size();
    return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

inline std::string fixed(double value, int decimals) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
    return buf;
}

// "key=value key=value" -> map (values as text).
inline std::map<std::string, std::string> parse_pairs(const std::string& line) {
    std::map<std::string, std::string> out;
    std::istringstream in(line);
    std::string word;
    while (in >> word) {
        const auto eq = word.find('=');
        if (eq != std::string::npos) {
            out[word.substr(0, eq)] = word.substr(eq + 1);
        }
    }
    return out;
}

inline double number(const std::map<std::string, std::string>& m, const std::string& key) {
    const auto it = m.find(key);
    if (it == m.end()) {
        throw Broken("worker reported no " + key);
    }
    return std::stod(it->second);
}

// ---- processes ----------------------------------------------------------------------

// The environment of a child: ours, minus `drop`, plus `set` ("NAME=value").
inline std::vector<std::string> child_env(const std::vector<std::string>& set,
                                          const std::vector<std::string>& drop = {}) {
    std::vector<std::string> out;
    for (char** e = environ; *e != nullptr; ++e) {
        const std::string entry = *e;
        const std::string name = entry.substr(0, entry.find('='));
        bool skip = std::find(drop.begin(), drop.end(), name) != drop.end();
        for (const auto& s : set) {
            skip = skip || s.substr(0, s.find('=')) == name;
        }
        if (!skip) {
            out.push_back(entry);
        }
    }
    out.insert(out.end(), set.begin(), set.end());
    return out;
}

// A child whose stdout we read (stdin /dev/null, stderr to `log` or ours).
class Child {
public:
    Child(const std::vector<std::string>& args, const std::vector<std::string>& env,
          const std::string& log = {}) {
        std::vector<std::string> a = args, e = env;
        std::vector<char*> argv, envp;
        for (auto& s : a) {
            argv.push_back(s.data());
        }
        argv.push_back(nullptr);
        for (auto& s : e) {
            envp.push_back(s.data());
        }
        envp.push_back(nullptr);
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            throw Broken("pipe2 failed");
        }
        out_ = fds[0];
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        if (!log.empty()) {
            posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                             0600);
        }
        const int rc = ::posix_spawnp(&pid_, argv[0], &fa, nullptr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&fa);
        ::close(fds[1]);
        if (rc != 0) {
            ::close(out_);
            throw Broken("cannot start " + args[0] + ": " + std::strerror(rc));
        }
    }
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    ~Child() {
        if (pid_ > 0) {
            stop();
        }
        if (out_ >= 0) {
            ::close(out_);
        }
    }

    pid_t pid() const noexcept { return pid_; }

    // Reads the next line of its stdout into `line` (without '\n'); false at
    // EOF or timeout.
    bool read_line(std::string& line, std::chrono::milliseconds timeout) {
        line.clear();
        const auto deadline = Clock::now() + timeout;
        while (true) {
            const auto nl = buffer_.find('\n');
            if (nl != std::string::npos) {
                line = buffer_.substr(0, nl);
                buffer_.erase(0, nl + 1);
                return true;
            }
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) {
                return false;
            }
            pollfd p{out_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
                continue;
            }
            char buf[4096];
            const ssize_t n = ::read(out_, buf, sizeof buf);
            if (n <= 0) {
                return false;
            }
            buffer_.append(buf, static_cast<std::size_t>(n));
        }
    }

    // Reads stdout to EOF, waits; returns (exit status, everything printed).
    std::pair<int, std::string> finish() {
        std::string all = buffer_;
        buffer_.clear();
        char buf[4096];
        ssize_t n;
        while ((n = ::read(out_, buf, sizeof buf)) > 0) {
            all.append(buf, static_cast<std::size_t>(n));
        }
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
        return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), all};
    }

    // SIGTERM, then SIGKILL after 10 s; true when it exited 0.
    bool stop() {
        if (pid_ <= 0) {
            return true;
        }
        ::kill(pid_, SIGTERM);
        int status = 0;
        const auto deadline = Clock::now() + std::chrono::seconds(10);
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (Clock::now() > deadline) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                pid_ = -1;
                return false;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        }
        pid_ = -1;
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
    }

private:
    pid_t pid_ = -1;
    int out_ = -1;
    std::string buffer_;
};

// Runs a command to completion; throws Broken (with its output) unless it exits 0.
inline std::string run_ok(const std::vector<std::string>& args, const std::vector<std::string>& env,
                          const std::string& log = {}) {
    Child c(args, env, log);
    auto [status, out] = c.finish();
    if (status != 0) {
        std::string cmd;
        for (const auto& a : args) {
            cmd += a + " ";
        }
        throw Broken(cmd + "exited " + std::to_string(status) + ": " + out);
    }
    return out;
}

// User + system CPU seconds of a process so far (/proc/PID/stat, includes all
// its threads).
inline double process_cpu_seconds(pid_t pid) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
    if (f == nullptr) {
        return 0.0;
    }
    char buf[2048];
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    const char* p = std::strrchr(buf, ')');
    if (p == nullptr) {
        return 0.0;
    }
    std::istringstream in(p + 2);
    std::string field;
    unsigned long long utime = 0, stime = 0;
    // Fields after the command: state(3) ... utime(14) stime(15).
    for (int i = 3; i <= 15 && in >> field; ++i) {
        if (i == 14) {
            utime = std::stoull(field);
        } else if (i == 15) {
            stime = std::stoull(field);
        }
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Calls `op` in batches of 16 for `secs` seconds; seconds per call.
template <typename Op> double seconds_per_op(double secs, Op&& op) {
    long n = 0;
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration<double>(secs);
    Clock::time_point now;
    do {
        for (int i = 0; i < 16; ++i) {
            op();
        }
        n += 16;
        now = Clock::now();
    } while (now < end);
    return std::chrono::duration<double>(now - t0).count() / static_cast<double>(n);
}

inline double loadavg1() {
    double l = 0.0;
    if (std::FILE* f = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(f, "%lf", &l) != 1) {
            l = 0.0;
        }
        std::fclose(f);
    }
    return l;
}

class TempDir {
public:
    TempDir() {
        std::string pattern = "/tmp/p11benchXXXXXX"; // short: sun_path is 108 bytes
        if (::mkdtemp(pattern.data()) == nullptr) {
            throw Broken("mkdtemp failed");
        }
        path_ = pattern;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

private:
    fs::path path_;
};

inline void write_file(const fs::path& path, const std::string& text) {
    std::FILE* f = std::fopen(path.c_str(), "w");
    if (f == nullptr || std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
        throw Broken("cannot write " + path.string());
    }
    std::fclose(f);
    ::chmod(path.c_str(), 0600);
}

// The whole text of a file ("" when it cannot be read).
inline std::string file_contents(const fs::path& path) {
    std::string text;
    if (std::FILE* f = std::fopen(path.c_str(), "r")) {
        char buf[4096];
        std::size_t n;
        while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
            text.append(buf, n);
        }
        std::fclose(f);
    }
    return text;
}

// An executable called `name` in a directory of $PATH.
inline bool on_path(const std::string& name) {
    const char* path = std::getenv("PATH");
    const std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t at = 0;
    while (at <= dirs.size()) {
        const auto colon = std::min(dirs.find(':', at), dirs.size());
        const std::string candidate = dirs.substr(at, colon - at) + "/" + name;
        if (::access(candidate.c_str(), X_OK) == 0) {
            return true;
        }
        at = colon + 1;
    }
    return false;
}

// Runs a worker child (`args`, `env`, stderr to `log`) to completion; the
// pairs of the last "R key=value..." line it printed. Throws Broken, with its
// output and the log, unless it exits 0 after printing one.
inline std::map<std::string, std::string> worker_pairs(const std::vector<std::string>& args,
                                                       const std::vector<std::string>& env,
                                                       const std::string& log,
                                                       const std::string& what) {
    Child c(args, env, log);
    auto [status, out] = c.finish();
    const auto at = out.rfind("R ");
    if (status != 0 || at == std::string::npos) {
        throw Broken("worker for " + what + " exited " + std::to_string(status) + ": " + out +
                     file_contents(log));
    }
    return parse_pairs(out.substr(at + 2, out.find('\n', at) - at - 2));
}

// ---- hsmsim ---------------------------------------------------------------------------

// `hsmsim serve` on sockets in `dir`, its world in dir/km, with softcard
// "card1" (passphrase kPin) holding EC P-256 key "eck" (CKA_ID 01).
class Hsmsim {
public:
    static constexpr const char* kPin = "secret";

    Hsmsim(std::string binary, const fs::path& dir, int modules, int latency_ms)
        : bin_(std::move(binary)), socket_((dir / "c.sock").string()),
          admin_((dir / "a.sock").string()), kmdata_((dir / "km").string()),
          log_((dir / "serve.log").string()), pass_((dir / "pass").string()) {
        fs::create_directory(kmdata_);
        ::chmod(kmdata_.c_str(), 0700);
        child_ = std::make_unique<Child>(
            std::vector<std::string>{bin_, "serve", "--modules", std::to_string(modules),
                                     "--op-latency-ms", std::to_string(latency_ms),
                                     "--init-delay-ms", "0"},
            env(), log_);
        std::string line;
        if (!child_->read_line(line, std::chrono::seconds(20)) ||
            line.rfind("hsmsim: ready: ", 0) != 0) {
            child_->stop();
            throw Broken("hsmsim serve printed no ready line (got '" + line + "')\n" + log());
        }
        write_file(pass_, kPin);
        cli({"softcard", "create", "card1", "--passphrase-file", pass_});
        cli({"key", "generate", "--type", "ec-p256", "--label", "eck", "--id", "01", "--protect",
             "softcard:card1", "--passphrase-file", pass_});
    }

    // The world's environment (for the CLI, the service and the module).
    std::vector<std::string> env(const std::vector<std::string>& extra = {}) const {
        std::vector<std::string> set = {"NFAST_KMDATA=" + kmdata_, "HSMSIM_SOCKET=" + socket_,
                                        "HSMSIM_ADMIN_SOCKET=" + admin_, "LC_ALL=C"};
        set.insert(set.end(), extra.begin(), extra.end());
        return child_env(set,
                         {"CKNFAST_LOADSHARING", "CKNFAST_RELOAD_KEYS", "NFAST_NFKM_TOKENSFILE",
                          "PRELOADRUN_PKCS11_LOG", "PRELOADRUN_PKCS11_LOG_LEVEL", "NOTIFY_SOCKET"});
    }

    std::string cli(std::vector<std::string> args) const {
        args.insert(args.begin(), bin_);
        return run_ok(args, env(), log_);
    }

    // What the service wrote on stderr, for error messages.
    std::string log() const {
        std::string text;
        if (std::FILE* f = std::fopen(log_.c_str(), "r")) {
            char buf[4096];
            std::size_t n;
            while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
                text.append(buf, n);
            }
            std::fclose(f);
        }
        return "hsmsim serve log:\n" + text;
    }

    pid_t pid() const { return child_->pid(); }
    const std::string& socket() const { return socket_; }
    const std::string& admin_socket() const { return admin_; }
    const std::string& pass_file() const { return pass_; }
    bool stop() { return child_->stop(); }

private:
    std::string bin_, socket_, admin_, kmdata_, log_, pass_;
    std::unique_ptr<Child> child_;
};

// ---- options ----------------------------------------------------------------------------

// --name value options after the mode; unknown names are an error.
class Options {
public:
    Options(int argc, char** argv, int first) {
        for (int i = first; i < argc; ++i) {
            std::string a = argv[i];
            if (a.rfind("--", 0) != 0) {
                throw std::invalid_argument("unexpected argument " + a);
            }
            const auto eq = a.find('=');
            if (eq != std::string::npos) {
                values_[a.substr(2, eq - 2)] = a.substr(eq + 1);
            } else if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0) {
                values_[a.substr(2)] = argv[++i];
            } else {
                values_[a.substr(2)] = "1";
            }
        }
    }
    std::string get(const std::string& name, const std::string& fallback) {
        used_.push_back(name);
        const auto it = values_.find(name);
        return it == values_.end() ? fallback : it->second;
    }
    double num(const std::string& name, double fallback) {
        return std::stod(get(name, std::to_string(fallback)));
    }
    bool flag(const std::string& name) { return get(name, "0") != "0"; }
    void done() const {
        for (const auto& [k, v] : values_) {
            if (std::find(used_.begin(), used_.end(), k) == used_.end()) {
                throw std::invalid_argument("unknown option --" + k);
            }
        }
    }

private:
    std::map<std::string, std::string> values_;
    std::vector<std::string> used_;
};

inline std::string self_exe() {
    return fs::read_symlink("/proc/self/exe").string();
}

// main() of a benchmark that runs itself as worker children: "NAME worker
// --options..." runs `worker`, anything else `parent`. Exit status: theirs;
// 2 for bad usage (std::invalid_argument), 1 when something broke.
template <typename Worker, typename Parent>
int worker_parent_main(const char* name, int argc, char** argv, Worker worker, Parent parent) {
    try {
        const bool is_worker = argc > 1 && std::string(argv[1]) == "worker";
        Options o(argc, argv, is_worker ? 2 : 1);
        return is_worker ? worker(o) : parent(o);
    } catch (const std::invalid_argument& e) {
        std::cerr << name << ": " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << name << ": " << e.what() << "\n";
        return 1;
    }
}

} // namespace bench_support
