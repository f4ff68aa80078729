#include "supervisor_test_util.hpp"

#include "core/signals.hpp"

#include <ctime>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <unistd.h>

namespace supervisor_test {

namespace sv = preloadrun::supervisor;

void block_and_drain_signals() {
    sv::block_supervised_signals();
    sv::SignalFd pending;
    pending.read_pending();
}

std::map<std::string, std::string> read_key_values(const std::filesystem::path& file) {
    std::map<std::string, std::string> values;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        const auto eq = line.find('=');
        if (eq != std::string::npos) {
            values[line.substr(0, eq)] = line.substr(eq + 1);
        }
    }
    return values;
}

std::map<std::string, std::vector<std::string>> read_env(const std::filesystem::path& file) {
    std::map<std::string, std::vector<std::string>> env;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("env=", 0) != 0) {
            continue;
        }
        const std::string entry = line.substr(4);
        const auto eq = entry.find('=');
        env[entry.substr(0, eq)].push_back(eq == std::string::npos ? "" : entry.substr(eq + 1));
    }
    return env;
}

std::map<std::string, int> read_counts(const std::filesystem::path& file) {
    std::map<std::string, int> counts;
    for (const auto& [name, value] : read_key_values(file)) {
        counts[name] = std::stoi(value);
    }
    return counts;
}

bool run_until(sv::EventLoop& loop, const std::function<bool()>& done,
               std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        loop.run_once(10ms);
    }
    return true;
}

int run_to_end(const sv::ChildSpec& spec) {
    sv::EventLoop loop;
    sv::Supervisor supervisor(loop);
    supervisor.start(spec);
    return supervisor.wait();
}

namespace {

// pid, state and ppid from /proc/<pid>/stat ("pid (comm) S ppid ...").
bool read_stat(const std::string& path, ProcInfo& info, pid_t& ppid) {
    std::ifstream in(path);
    std::string text;
    if (!std::getline(in, text)) {
        return false;
    }
    const auto close = text.rfind(')');
    if (close == std::string::npos) {
        return false;
    }
    std::istringstream rest(text.substr(close + 1));
    info.pid = std::stoi(text);
    rest >> info.state >> ppid;
    return true;
}

} // namespace

std::vector<ProcInfo> children_of_this_process() {
    std::vector<ProcInfo> children;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const std::string name = entry.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        ProcInfo info;
        pid_t ppid = 0;
        if (read_stat(entry.path() / "stat", info, ppid) && ppid == ::getpid()) {
            children.push_back(info);
        }
    }
    return children;
}

char process_state(pid_t pid) {
    ProcInfo info;
    pid_t ppid = 0;
    return read_stat("/proc/" + std::to_string(pid) + "/stat", info, ppid) ? info.state : '?';
}

} // namespace supervisor_test
