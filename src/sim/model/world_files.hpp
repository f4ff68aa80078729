#pragma once
// What the parts of World share about the files of a Security World
// directory: their names, modes and size limit, the AAD each wrapped secret
// is bound to, and the log. World is implemented in three files: world.cpp
// (the directory, its lock, the enrolled modules and their counters),
// world_tokens.cpp (softcards and card sets) and world_keys.cpp (persistent
// keys). Private to them; world_format.hpp says what the files hold.

#include "model/world_format.hpp"
#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/log.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace preloadrun::sim::world_files {

inline constexpr std::size_t kMaxFile = 1024 * 1024;
inline constexpr mode_t kDirMode = 0700;
inline constexpr mode_t kFileMode = 0600;
inline constexpr std::string_view kCardPrefix = "card_";
inline constexpr std::string_view kKeyPrefix = "key_";

inline std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.world");
}

inline std::string token_aad(std::span<const std::uint8_t> hash) {
    return "hsmsim token key " + to_hex(hash);
}

inline std::string key_aad(const KeyRecord& record) {
    // A key made before keys could be extractable has the same AAD as a
    // key that is not; whether one is cannot be changed in its file.
    return "hsmsim key " + record.ident + " " + protection_text(record.protection) +
           (record.extractable ? " extractable" : "");
}

inline std::string card_name(std::span<const std::uint8_t> hash) {
    return std::string(kCardPrefix) + to_hex(hash);
}

inline std::string key_name(const std::string& ident) {
    return std::string(kKeyPrefix) + ident;
}

} // namespace preloadrun::sim::world_files
