#pragma once
// The files of a Security World, as JSON documents tagged with
// "format": "hsmsim-<kind>/1". Pure: text in, records out. Every decode
// failure throws Error(corrupt) naming the file.
//
//   world         {"format":"hsmsim-world/1","id":HEX20,"key":HEX32}
//   modules       {"format":"hsmsim-modules/1","modules":[{"number":1,"esn":"A1B2-C3D4-E5F6"}]}
//   counters      {"format":"hsmsim-counters/1","modules":[{"number":1,"generation":G,
//                  "handles":H}]}: what must never be issued again on each module, across
//                  restarts of the service (generations up to G, handles below H)
//   card_<hash>   {"format":"hsmsim-card/1","type":"softcard"|"cardset","name":..,"hash":HEX20,
//                  "kdf":"pbkdf2-sha256","iterations":N,"salt":HEX,"wrapped_key":HEX,
//                  "creator":UID}
//   key_<ident>   {"format":"hsmsim-key/1","ident":HEX20,"label":..,"id":HEX,"type":"rsa"|
//                  "ec-p256"|"ec-p384"|"aes","bits":N,"protection":"module"|"softcard:HEX20"|
//                  "cardset:HEX20","public":HEX,"wrapped_private":HEX,"creator":UID}
//
// "creator" (the uid of the client that created the token or key) is
// optional: files written before it was recorded have none.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace preloadrun::sim {

inline constexpr std::size_t kWorldIdSize = 20;
inline constexpr std::size_t kWorldKeySize = 32;
inline constexpr std::size_t kIdentSize = 20;
inline constexpr std::uint32_t kMaxKdfIterations = 10'000'000;
inline constexpr std::size_t kMaxLabelSize = 256; // bytes of a key label (CKA_LABEL)
inline constexpr std::size_t kMaxIdSize = 256;    // bytes of a key's CKA_ID

struct WorldRecord {
    Bytes id;
    SecureBuffer key;
};

struct EnrolledModule {
    std::uint32_t number = 0;
    std::string esn;
    bool operator==(const EnrolledModule&) const = default;
};

// A module's counters as the service persists them: its generation, and the
// handles reserved for issuing (every handle below `handles` may have been
// issued already). A module never counted has none.
struct ModuleCounters {
    std::uint32_t number = 0;
    std::uint64_t generation = 0;
    std::uint64_t handles = 1;
    bool operator==(const ModuleCounters&) const = default;
};
inline constexpr std::uint64_t kMaxCounter = std::uint64_t{1} << 62;

struct CardRecord {
    hsm::TokenType type = hsm::TokenType::softcard;
    std::string name;
    Bytes hash;
    std::uint32_t iterations = 0;
    Bytes salt;
    Bytes wrapped_key;
    std::optional<uid_t> creator; // nullopt: not recorded
};

struct Protection {
    hsm::TokenType type = hsm::TokenType::softcard;
    Bytes hash;
    bool operator==(const Protection&) const = default;
};

struct KeyRecord {
    std::string ident;
    std::string label;
    Bytes id;
    hsm::KeyType type = hsm::KeyType::rsa;
    std::uint32_t bits = 0;
    std::optional<Protection> protection; // nullopt: module-protected
    Bytes public_der;
    Bytes wrapped_private;
    std::optional<uid_t> creator; // nullopt: not recorded
    bool extractable = false;     // hsm::KeyInfo::extractable; part of the key's AAD
    bool imported = false;        // hsm::KeyInfo::imported
    Bytes check_value;            // hsm::KeyInfo::check_value
};

// The world file holds the world key: it is encoded into, and decoded from,
// locked memory, and the key's text never passes through a JSON parser or a
// buffer that is freed unwiped (the parser sees a copy with the key blanked).
SecureBuffer encode_world(const WorldRecord& record);
WorldRecord decode_world(std::span<const std::uint8_t> text, const std::string& file);
std::string encode_modules(const std::vector<EnrolledModule>& modules);
std::vector<EnrolledModule> decode_modules(std::string_view text, const std::string& file);

// Modules in number order, each at most once.
std::string encode_counters(const std::vector<ModuleCounters>& counters);
std::vector<ModuleCounters> decode_counters(std::string_view text, const std::string& file);
std::string encode_card(const CardRecord& record);
CardRecord decode_card(std::string_view text, const std::string& file);
std::string encode_key(const KeyRecord& record);
KeyRecord decode_key(std::string_view text, const std::string& file);

// "module", "softcard:<hashhex>", "cardset:<hashhex>".
std::string protection_text(const std::optional<Protection>& protection);
// "softcard", "cardset", "rsa", "ec-p256", ...
std::string_view token_type_text(hsm::TokenType type);
std::string_view key_type_text(hsm::KeyType type);
// A token in messages: "softcard 'name' (hash <hashhex>)" (no name: none).
std::string token_label(const hsm::TokenInfo& token);

// Token names: 1..64 characters of [A-Za-z0-9._-].
bool valid_token_name(std::string_view name) noexcept;
// A key ident: 40 lowercase hex digits.
bool valid_ident(std::string_view ident) noexcept;

} // namespace preloadrun::sim
