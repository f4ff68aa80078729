#include "member/fleet_config.hpp"

#include "model/world_format.hpp"
#include "preloadrun/common/duration.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/common/files.hpp"

#include <algorithm>
#include <cerrno>
#include <fcntl.h>
#include <set>
#include <sstream>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

namespace preloadrun::sim::member {

namespace {

constexpr std::size_t kMaxConfigBytes = 1 << 20;

// Reports errors as "SOURCE:LINE: what".
class Reader {
public:
    explicit Reader(std::string source) : source_(std::move(source)) {}

    [[noreturn]] void fail(const toml::node* at, const std::string& what) const {
        std::string where = source_;
        if (at != nullptr && at->source().begin.line > 0) {
            where += ":" + std::to_string(at->source().begin.line);
        }
        throw Error(ErrorCode::usage, where + ": " + what);
    }

    void only_keys(const toml::table& table, std::initializer_list<std::string_view> allowed,
                   const std::string& what) const {
        for (const auto& [key, node] : table) {
            if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end()) {
                std::string list;
                for (auto a : allowed) {
                    list += (list.empty() ? "" : ", ") + std::string(a);
                }
                fail(&node, "unknown key \"" + std::string(key.str()) + "\" in " + what +
                                " (known: " + list + ")");
            }
        }
    }

    std::string text(const toml::node& node, const std::string& what) const {
        const auto* s = node.as_string();
        if (s == nullptr) {
            fail(&node, what + " must be a string");
        }
        return s->get();
    }

    std::chrono::milliseconds duration(const toml::node& node, const std::string& what,
                                       std::chrono::milliseconds least) const {
        try {
            auto value = parse_duration(text(node, what));
            if (value < least || value > std::chrono::minutes(10)) {
                fail(&node, what + " must be " + std::to_string(least.count()) + "ms to 10m");
            }
            return value;
        } catch (const Error& e) {
            if (std::string_view(e.what()).rfind(source_, 0) == 0) {
                throw;
            }
            fail(&node, what + ": " + e.what());
        }
    }

    std::int64_t integer(const toml::node& node, const std::string& what, std::int64_t least,
                         std::int64_t most) const {
        const auto* i = node.as_integer();
        if (i == nullptr || i->get() < least || i->get() > most) {
            fail(&node, what + " must be a whole number from " + std::to_string(least) + " to " +
                            std::to_string(most));
        }
        return i->get();
    }

    const toml::table& table(const toml::node& node, const std::string& what) const {
        const auto* t = node.as_table();
        if (t == nullptr) {
            fail(&node, what + " must be a table");
        }
        return *t;
    }

private:
    std::string source_;
};

bool valid_name(std::string_view name) {
    return valid_token_name(name); // 1..64 of A-Z a-z 0-9 . _ -
}

bool valid_env_name(std::string_view name) {
    return !name.empty() && name.size() <= 255 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '_';
    }) && !(name[0] >= '0' && name[0] <= '9');
}

// The settings a member takes, from [defaults] or its own table.
void member_settings(const Reader& r, const toml::table& t, MemberConfig& m, bool defaults) {
    if (const auto* node = t.get("library")) {
        m.library = r.text(*node, "library");
        if (m.library.empty() || m.library.front() != '/') {
            r.fail(node, "library must be an absolute path (\"" + m.library + "\")");
        }
    }
    if (const auto* node = t.get("timeout")) {
        m.timeout = r.duration(*node, "timeout", std::chrono::milliseconds(100));
    }
    if (const auto* node = t.get("probe-interval")) {
        m.probe_interval = r.duration(*node, "probe-interval", std::chrono::milliseconds(100));
    }
    if (const auto* node = t.get("max-sessions")) {
        m.max_sessions = static_cast<int>(r.integer(*node, "max-sessions", 1, 64));
    }
    if (const auto* node = t.get("env")) {
        for (const auto& [key, value] : r.table(*node, "env")) {
            if (!valid_env_name(key.str())) {
                r.fail(&value, "env: \"" + std::string(key.str()) + "\" is not a variable name");
            }
            const std::string name(key.str());
            auto setting = r.text(value, "env." + name);
            auto same = [&name](const auto& e) { return e.first == name; };
            m.env.erase(std::remove_if(m.env.begin(), m.env.end(), same), m.env.end());
            m.env.emplace_back(name, std::move(setting));
        }
    }
    if (defaults) {
        return;
    }
    if (const auto* node = t.get("token")) {
        const auto& token = r.table(*node, "token");
        r.only_keys(token, {"label", "serial", "slot"}, "token of member " + m.name);
        if (token.size() != 1) {
            r.fail(node, "member " + m.name + ": token takes one of label, serial or slot");
        }
        if (const auto* label = token.get("label")) {
            m.token.label = r.text(*label, "token.label");
        } else if (const auto* serial = token.get("serial")) {
            m.token.serial = r.text(*serial, "token.serial");
        } else {
            m.token.slot = static_cast<std::uint64_t>(
                r.integer(*token.get("slot"), "token.slot", 0, INT64_MAX));
        }
    }
}

void read_members(const Reader& r, const toml::table& root, FleetConfig& config) {
    MemberConfig defaults;
    if (const auto* node = root.get("defaults")) {
        const auto& t = r.table(*node, "[defaults]");
        r.only_keys(t, {"library", "timeout", "probe-interval", "max-sessions", "env"},
                    "[defaults]");
        member_settings(r, t, defaults, true);
    }
    const auto* node = root.get("member");
    if (node == nullptr) {
        r.fail(nullptr, "no [member.NAME] table: the fleet has no member");
    }
    for (const auto& [key, value] : r.table(*node, "member")) {
        MemberConfig m = defaults;
        m.name = std::string(key.str());
        if (!valid_name(m.name)) {
            r.fail(&value,
                   "member name \"" + m.name + "\" is not 1..64 characters of A-Z a-z 0-9 . _ -");
        }
        const auto& t = r.table(value, "member " + m.name);
        r.only_keys(t, {"library", "token", "timeout", "probe-interval", "max-sessions", "env"},
                    "member " + m.name);
        member_settings(r, t, m, false);
        if (m.library.empty()) {
            r.fail(&value, "member " + m.name + " has no library (nor does [defaults])");
        }
        if (m.token == TokenChoice{}) {
            r.fail(&value, "member " + m.name + " has no token (label, serial or slot)");
        }
        config.members.push_back(std::move(m));
    }
}

void read_sets(const Reader& r, const toml::table& root, FleetConfig& config) {
    const auto* node = root.get("set");
    if (node == nullptr) {
        r.fail(nullptr, "no [set.NAME] table: no token set for preloadrun -s NAME to load");
    }
    std::set<std::string> placed;
    for (const auto& [key, value] : r.table(*node, "set")) {
        TokenSetConfig set{std::string(key.str()), {}};
        if (!valid_name(set.name)) {
            r.fail(&value,
                   "set name \"" + set.name + "\" is not 1..64 characters of A-Z a-z 0-9 . _ -");
        }
        const auto& t = r.table(value, "set " + set.name);
        r.only_keys(t, {"members"}, "set " + set.name);
        const auto* list = t.get("members") != nullptr ? t.get("members")->as_array() : nullptr;
        if (list == nullptr || list->empty()) {
            r.fail(&value, "set " + set.name + " needs members = [\"name\", ...]");
        }
        for (const auto& item : *list) {
            auto name = r.text(item, "a member of set " + set.name);
            if (config.member(name) == nullptr) {
                r.fail(&item, "set " + set.name + " names member " + name + ", which is not in " +
                                  "the file");
            }
            if (!placed.insert(name).second) {
                r.fail(&item, "member " + name + " is in two sets: a member is one token");
            }
            set.members.push_back(name);
        }
        config.sets.push_back(std::move(set));
    }
}

// Who may change `file` (and what the service would load from it): root, the
// service's user; never group or others. Symlinks are followed, as dlopen
// does; a file that is not there is left to the member's worker to report.
bool safe_to_load(const std::filesystem::path& file) {
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0) {
        return true;
    }
    return (st.st_uid == 0 || st.st_uid == ::geteuid()) && (st.st_mode & 022) == 0;
}

void require_safe_library(const MemberConfig& m, const std::string& source) {
    for (const auto& at :
         {std::filesystem::path(m.library), std::filesystem::path(m.library).parent_path()}) {
        if (!safe_to_load(at)) {
            throw Error(ErrorCode::permission,
                        source + ": member " + m.name + ": refusing to load " + m.library + ": " +
                            at.string() + " may be changed by a user other than root and uid " +
                            std::to_string(::geteuid()) + " (chmod go-w, or chown)");
        }
    }
}

} // namespace

const MemberConfig* FleetConfig::member(std::string_view name) const {
    auto it = std::find_if(members.begin(), members.end(),
                           [&](const MemberConfig& m) { return m.name == name; });
    return it == members.end() ? nullptr : &*it;
}

const TokenSetConfig* FleetConfig::set_of(std::string_view member) const {
    for (const auto& set : sets) {
        if (std::find(set.members.begin(), set.members.end(), member) != set.members.end()) {
            return &set;
        }
    }
    return nullptr;
}

FleetConfig parse_fleet_config(std::string_view text, const std::string& source) {
    Reader r(source);
    toml::table root;
    try {
        root = toml::parse(text, source);
    } catch (const toml::parse_error& e) {
        throw Error(ErrorCode::usage, source + ":" + std::to_string(e.source().begin.line) + ": " +
                                          std::string(e.description()));
    }
    r.only_keys(root, {"defaults", "member", "set"}, "the file");
    FleetConfig config;
    read_members(r, root, config);
    read_sets(r, root, config);
    return config;
}

FleetConfig load_fleet_config(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd) {
        int err = errno;
        if (err == ENOENT) {
            throw Error(ErrorCode::not_found,
                        "fleet configuration " + path.string() + " does not exist");
        }
        throw_errno("cannot open the fleet configuration " + path.string(), err);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
        throw_errno("cannot stat " + path.string());
    }
    if (!S_ISREG(st.st_mode)) {
        throw Error(ErrorCode::usage, path.string() + " is not a regular file");
    }
    if ((st.st_uid != ::geteuid() && st.st_uid != 0) || (st.st_mode & 022) != 0) {
        throw Error(ErrorCode::permission,
                    "refusing the fleet configuration " + path.string() +
                        ": it names libraries this service loads, so it must belong to " +
                        (::geteuid() == 0 ? std::string("root")
                                          : "uid " + std::to_string(::geteuid()) + " or root") +
                        " and be writable by no one else (chmod go-w)");
    }
    std::string text;
    char buffer[65536];
    for (;;) {
        auto n = ::read(fd.get(), buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            throw_errno("cannot read " + path.string());
        }
        if (n == 0) {
            break;
        }
        text.append(buffer, static_cast<std::size_t>(n));
        if (text.size() > kMaxConfigBytes) {
            throw Error(ErrorCode::usage, path.string() + " is larger than 1 MiB");
        }
    }
    auto config = parse_fleet_config(text, path.string());
    for (const auto& m : config.members) {
        require_safe_library(m, path.string());
    }
    return config;
}

} // namespace preloadrun::sim::member
