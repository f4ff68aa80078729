#pragma once
// The fleet configuration file of a service whose modules are PKCS#11
// members (man 5 preloadrun-fleet): the members (a name, a PKCS#11 library, which
// token, the library's environment, a timeout, sessions, a probe interval)
// and the token sets (what `preloadrun -s NAME` loads: member tokens that hold
// the same keys). TOML.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace preloadrun::sim::member {

inline constexpr std::chrono::milliseconds kDefaultTimeout{5000};
inline constexpr std::chrono::milliseconds kDefaultProbeInterval{2000};
inline constexpr int kDefaultSessions = 4;

struct TokenChoice {
    std::string label;
    std::string serial;
    std::optional<std::uint64_t> slot;
    bool operator==(const TokenChoice&) const = default;
};

struct MemberConfig {
    std::string name;
    std::string library; // absolute path
    TokenChoice token;
    std::vector<std::pair<std::string, std::string>> env;
    std::chrono::milliseconds timeout = kDefaultTimeout;
    int max_sessions = kDefaultSessions;
    std::chrono::milliseconds probe_interval = kDefaultProbeInterval;
    bool operator==(const MemberConfig&) const = default;
};

struct TokenSetConfig {
    std::string name;
    std::vector<std::string> members;
    bool operator==(const TokenSetConfig&) const = default;
};

struct FleetConfig {
    std::vector<MemberConfig> members; // in the file's order
    std::vector<TokenSetConfig> sets;
    const MemberConfig* member(std::string_view name) const;
    // The set `member` belongs to, or null.
    const TokenSetConfig* set_of(std::string_view member) const;
};

// Parses `text` (`source`: the file's name, for messages). Throws
// Error(usage) "SOURCE:LINE: what is wrong" for a syntax error, an unknown
// key, a missing or invalid value, a member in two sets, a set naming an
// unknown member.
FleetConfig parse_fleet_config(std::string_view text, const std::string& source);

// Reads and parses `path`. The file names libraries that the service loads,
// so it must be the service user's or root's and writable by no one else,
// and so must each library and its directory (when they exist):
// Error(permission) naming the fix otherwise; Error(not_found) when the file
// is missing.
FleetConfig load_fleet_config(const std::filesystem::path& path);

} // namespace preloadrun::sim::member
