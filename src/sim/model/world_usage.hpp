#pragma once
// What the files of a Security World take, and the limits on it: how many
// persistent keys and tokens each uid created, and the bytes of all the
// files together. The World fills it from the directory once, at start, and
// keeps it current as it writes and removes files; check_room() refuses a
// new file past a limit. Not thread-safe: the World serialises its use.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <sys/types.h>

namespace preloadrun::sim {

struct WorldLimits {
    std::uint32_t max_keys_per_uid = 10000;
    std::uint32_t max_tokens_per_uid = 1000;
    std::uint64_t max_bytes = 256ULL * 1024 * 1024;
};

// The command-line options that set each limit, for the messages.
inline constexpr const char* kMaxKeysOption = "--max-keys-per-uid";
inline constexpr const char* kMaxTokensOption = "--max-tokens-per-uid";
inline constexpr const char* kMaxWorldOption = "--max-world-mib";

enum class WorldFile { key, token, other };

class WorldUsage {
public:
    explicit WorldUsage(WorldLimits limits = {}) : limits_(limits) {}

    const WorldLimits& limits() const noexcept { return limits_; }

    // The file `name` now holds `bytes` bytes (added, or replaced: its
    // previous size and creator no longer count).
    void record(const std::string& name, WorldFile kind, std::optional<uid_t> creator,
                std::uint64_t bytes);
    // The file `name` is gone.
    void forget(const std::string& name);

    // Throws Error(limit), naming the limit and the option that sets it,
    // when writing `bytes` more bytes in a new file of `kind` created by
    // `creator` would go past a limit (without a creator, only the bytes
    // are checked).
    void check_room(WorldFile kind, std::optional<uid_t> creator, std::uint64_t bytes) const;

    std::uint32_t keys_of(uid_t uid) const;
    std::uint32_t tokens_of(uid_t uid) const;
    std::uint64_t bytes() const noexcept { return bytes_; }

private:
    struct Entry {
        WorldFile kind = WorldFile::other;
        std::optional<uid_t> creator;
        std::uint64_t bytes = 0;
    };
    struct Counts {
        std::uint32_t keys = 0;
        std::uint32_t tokens = 0;
    };
    void count(const Entry& entry, int delta);
    void check_count(WorldFile kind, uid_t creator) const;

    WorldLimits limits_;
    std::map<std::string, Entry> files_;
    std::map<uid_t, Counts> per_uid_;
    std::uint64_t bytes_ = 0;
};

} // namespace preloadrun::sim
