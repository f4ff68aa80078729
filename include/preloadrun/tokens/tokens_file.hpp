#pragma once
// The tokens file: what a preload process loaded, per token and per module,
// so that a PKCS#11 module in another process can use and reload those
// tokens. It holds no secret. Format and meaning: preloadrun-tokens(5).
//
// This folder owns the whole contract between the writer (preloadrun) and
// the reader (the PKCS#11 module); both sides use it, neither spells any of
// it again:
//   tokens_file.hpp   the model (typed states), its limits and its codec
//   module_limit.hpp  which modules a party tracks: at most kMaxModules
//   reader.hpp        what a reader may use of a file: the current handles,
//                     which version it applied, whose file it is
//   environment.hpp   the variables that point an application at the file
//   liveness.hpp      whether the file's owner lives (the OFD lock)
//   publisher.hpp     the writer's side: publication, takeover, removal

#include "preloadrun/common/process.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace preloadrun::tokens {

inline constexpr std::uint32_t kFormatVersion = 2;
inline constexpr std::size_t kMaxFileSize = 1024 * 1024;
// The most modules a file lists, and a party tracks (module_limit.hpp).
inline constexpr std::size_t kMaxModules = 32;
inline constexpr std::size_t kMaxTokens = 256;

struct Owner {
    ProcessIdentity process;
    std::string instance; // 32 hex digits, random per preloadrun run
    bool operator==(const Owner&) const = default;
};

// A module's state as the file gives it. Only a usable module serves; the
// others hold no handle of the file.
enum class ModuleState { usable, initialising, failed, removed };
// The file's spelling: "usable", "initialising", "failed", "removed".
std::string_view to_string(ModuleState state) noexcept;
// The state the file spells `name` (nullopt for none).
std::optional<ModuleState> module_state_named(std::string_view name) noexcept;

enum class TokenType { softcard, cardset };
// The file's spelling: "softcard", "cardset".
std::string_view to_string(TokenType type) noexcept;
std::optional<TokenType> token_type_named(std::string_view name) noexcept;

// One module as the owner last saw it.
struct Module {
    std::uint32_t number = 0;
    std::string esn;
    ModuleState state = ModuleState::failed;
    std::uint64_t generation = 0;    // the module's generation (clears and restores)
    std::uint64_t reloads = 0;       // times the owner (re)loaded the tokens onto it
    std::int64_t last_reload_ms = 0; // Unix time in ms of the last (re)load, 0 never
    bool given_up = false;           // the retry window expired; retried on the next change
    bool operator==(const Module&) const = default;
};

// A token loaded on one module.
struct Loaded {
    std::uint32_t module = 0;
    std::string esn;
    std::uint64_t module_generation = 0;
    std::uint64_t handle = 0;
    bool operator==(const Loaded&) const = default;
};

struct Token {
    TokenType type = TokenType::softcard;
    std::string name;
    std::string hash; // 40 hex digits
    std::vector<Loaded> loaded;
    bool operator==(const Token&) const = default;
};

struct TokensFile {
    std::uint32_t version = kFormatVersion;
    std::uint64_t generation = 0; // +1 on every rewrite
    Owner owner;
    std::string world; // the world's identity, hex
    // The instance of the HSM service the handles were issued by (32 hex
    // digits, hsm::kServiceInstanceSize bytes): after a restart of the
    // service they mean nothing, whatever their numbers.
    std::string service_instance;
    bool high_availability = true;
    std::vector<Module> modules;
    std::vector<Token> tokens;
    bool operator==(const TokensFile&) const = default;
};

// JSON text, one object; see preloadrun-tokens(5).
std::string encode(const TokensFile& file);

// Strict: any missing or mistyped field, an unknown format, a newer version,
// out-of-range values or more than the limits above throw Error(corrupt)
// with a message saying what is wrong.
TokensFile decode(std::string_view text);

} // namespace preloadrun::tokens
