#include "model/world_usage.hpp"

#include "preloadrun/common/error.hpp"

#include <algorithm>

namespace preloadrun::sim {

namespace {

constexpr std::uint64_t kMiB = 1024 * 1024;

std::string mib_text(std::uint64_t bytes) {
    return bytes % kMiB == 0 ? std::to_string(bytes / kMiB) + " MiB"
                             : std::to_string(bytes) + " bytes";
}

} // namespace

void WorldUsage::count(const Entry& entry, int delta) {
    if (!entry.creator || entry.kind == WorldFile::other) {
        return;
    }
    auto& counts = per_uid_[*entry.creator];
    auto& n = entry.kind == WorldFile::key ? counts.keys : counts.tokens;
    n = delta > 0 ? n + 1 : (n > 0 ? n - 1 : 0);
    if (counts.keys == 0 && counts.tokens == 0) {
        per_uid_.erase(*entry.creator);
    }
}

void WorldUsage::record(const std::string& name, WorldFile kind, std::optional<uid_t> creator,
                        std::uint64_t bytes) {
    forget(name);
    Entry entry{kind, creator, bytes};
    count(entry, +1);
    bytes_ += bytes;
    files_.emplace(name, entry);
}

void WorldUsage::forget(const std::string& name) {
    auto it = files_.find(name);
    if (it == files_.end()) {
        return;
    }
    count(it->second, -1);
    bytes_ -= std::min(bytes_, it->second.bytes);
    files_.erase(it);
}

std::uint32_t WorldUsage::keys_of(uid_t uid) const {
    auto it = per_uid_.find(uid);
    return it == per_uid_.end() ? 0 : it->second.keys;
}

std::uint32_t WorldUsage::tokens_of(uid_t uid) const {
    auto it = per_uid_.find(uid);
    return it == per_uid_.end() ? 0 : it->second.tokens;
}

void WorldUsage::check_room(WorldFile kind, std::optional<uid_t> creator,
                            std::uint64_t bytes) const {
    if (creator) {
        check_count(kind, *creator);
    }
    if (bytes_ + bytes > limits_.max_bytes) {
        throw Error(ErrorCode::limit,
                    "the Security World is full: its files would take more than the " +
                        mib_text(limits_.max_bytes) + " it may hold (hsmsim serve " +
                        kMaxWorldOption + " " + std::to_string(limits_.max_bytes / kMiB) + ")");
    }
}

void WorldUsage::check_count(WorldFile kind, uid_t creator) const {
    const std::string who = "uid " + std::to_string(creator);
    if (kind == WorldFile::key && keys_of(creator) >= limits_.max_keys_per_uid) {
        throw Error(ErrorCode::limit,
                    who + " already created " + std::to_string(keys_of(creator)) +
                        " persistent keys, the most one uid may (hsmsim serve " + kMaxKeysOption +
                        " " + std::to_string(limits_.max_keys_per_uid) + "): destroy some first");
    }
    if (kind == WorldFile::token && tokens_of(creator) >= limits_.max_tokens_per_uid) {
        throw Error(ErrorCode::limit,
                    who + " already created " + std::to_string(tokens_of(creator)) +
                        " softcards and card sets, the most one uid may "
                        "(hsmsim serve " +
                        kMaxTokensOption + " " + std::to_string(limits_.max_tokens_per_uid) + ")");
    }
}

} // namespace preloadrun::sim
