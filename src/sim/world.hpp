#pragma once
// The Security World: the NFAST_KMDATA directory and what it holds (world
// key, enrolled modules, softcards / card sets, persistent keys). See
// world_format.hpp for the files. Thread-safe. While a World object lives it
// holds an advisory lock on <dir>/.lock, so one world has one service.

#include "preloadrun/common/fd.hpp"
#include "sim/crypto.hpp"
#include "sim/keywrap.hpp"
#include "sim/world_format.hpp"

#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace preloadrun::sim {

struct WorldOptions {
    std::filesystem::path dir;
    std::uint32_t kdf_iterations = kDefaultKdfIterations; // for tokens created from now on
};

// A new random key ident (20 bytes, hex).
std::string new_ident();

class World {
public:
    // Opens the world in options.dir, or creates one if the directory is
    // missing or empty. Throws Error(usage) for a non-empty directory that is
    // not a world, Error(already_exists) when another service holds the lock,
    // Error(corrupt) naming the file for a damaged `world` or `modules` file.
    explicit World(const WorldOptions& options);
    World(const World&) = delete;
    World& operator=(const World&) = delete;

    const Bytes& id() const noexcept { return id_; }
    const std::filesystem::path& dir() const noexcept { return dir_; }
    bool created() const noexcept { return created_; } // by this process, just now

    std::vector<EnrolledModule> modules() const;
    // Enrols one more module (next number, new random ESN) and persists it.
    EnrolledModule enrol_module();

    // Throws Error(already_exists) if a token of that type has that name.
    hsm::TokenInfo create_token(hsm::TokenType type, const std::string& name,
                                const SecureBuffer& passphrase);
    // Every readable token; damaged card files are skipped and logged.
    std::vector<hsm::TokenInfo> tokens() const;
    // Throws Error(not_found) or Error(corrupt) naming the file.
    CardRecord card(std::span<const std::uint8_t> hash) const;
    static hsm::TokenInfo info_of(const CardRecord& card);
    // The token key, once the passphrase is checked (KDF then unwrap).
    // Throws Error(wrong_passphrase); nothing changes in the world.
    SecureBuffer unlock_token(const CardRecord& card, const SecureBuffer& passphrase) const;

    // Writes key_<record.ident> with the private part of `key` wrapped under
    // the token key (record.protection set) or the world key. `token_key` is
    // ignored for module-protected keys.
    void store_key(KeyRecord& record, const Key& key, const SecureBuffer* token_key);
    // Every readable persistent key; damaged key files are skipped and logged.
    std::vector<hsm::KeyInfo> keys() const;
    // Throws Error(not_found) or Error(corrupt) naming the file.
    KeyRecord key_record(const std::string& ident) const;
    hsm::KeyInfo info_of(const KeyRecord& record) const;
    // Unwraps the private part; Error(corrupt) naming the file when it does
    // not unwrap (altered, or moved from another world or token).
    Key unwrap_key(const KeyRecord& record, const SecureBuffer* token_key) const;
    // Removes key_<ident>. Throws Error(not_found).
    void destroy_key(const std::string& ident);

private:
    std::filesystem::path card_path(std::span<const std::uint8_t> hash) const;
    std::filesystem::path key_path(const std::string& ident) const;
    void create_world();
    void open_world();
    std::vector<std::filesystem::path> files_with_prefix(std::string_view prefix) const;

    std::filesystem::path dir_;
    std::uint32_t kdf_iterations_;
    Fd lock_;
    Bytes id_;
    SecureBuffer key_;
    bool created_ = false;
    mutable std::mutex mutex_; // modules_ and read-modify-write of files
    std::vector<EnrolledModule> modules_;
};

} // namespace preloadrun::sim
