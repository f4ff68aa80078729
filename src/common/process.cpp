#include "preloadrun/common/process.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"

#include <charconv>
#include <climits>
#include <string_view>
#include <unistd.h>

namespace preloadrun {

namespace {

std::string trim(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) {
        text.pop_back();
    }
    return text;
}

} // namespace

// The command name (field 2) is in parentheses and may itself hold spaces
// and parentheses: count from the last ')'.
std::optional<std::uint64_t> proc_stat_start_time(std::string_view stat) {
    auto close = stat.rfind(')');
    if (close == std::string_view::npos) {
        return std::nullopt;
    }
    std::string_view rest = stat.substr(close + 1);
    // rest starts with " S ppid ..." : field 3 is the first token.
    int field = 2;
    std::size_t pos = 0;
    while (pos < rest.size()) {
        while (pos < rest.size() && rest[pos] == ' ') {
            ++pos;
        }
        auto end = rest.find(' ', pos);
        if (end == std::string_view::npos) {
            end = rest.size();
        }
        ++field;
        if (field == 22) {
            std::uint64_t value = 0;
            auto token = rest.substr(pos, end - pos);
            auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
            if (ec != std::errc() || ptr != token.data() + token.size()) {
                return std::nullopt;
            }
            return value;
        }
        pos = end;
    }
    return std::nullopt;
}

std::optional<std::uint64_t> process_start_time(pid_t pid) {
    if (pid <= 0) {
        return std::nullopt;
    }
    try {
        auto stat = read_text_file("/proc/" + std::to_string(pid) + "/stat", 4096);
        return proc_stat_start_time(stat);
    } catch (const Error&) {
        return std::nullopt;
    }
}

const std::string& current_boot_id() {
    static const std::string boot_id = trim(read_text_file("/proc/sys/kernel/random/boot_id", 128));
    return boot_id;
}

std::string current_hostname() {
    char name[HOST_NAME_MAX + 1] = {};
    if (::gethostname(name, sizeof name - 1) != 0) {
        return "unknown";
    }
    return name;
}

ProcessIdentity self_identity() {
    ProcessIdentity id;
    id.pid = ::getpid();
    auto start = process_start_time(id.pid);
    if (!start) {
        throw Error(ErrorCode::io, "cannot read this process's start time from /proc/self/stat");
    }
    id.start_time = *start;
    id.boot_id = current_boot_id();
    id.hostname = current_hostname();
    return id;
}

} // namespace preloadrun
