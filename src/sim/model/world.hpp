#pragma once
// The Security World: the NFAST_KMDATA directory and what it holds (world
// key, enrolled modules, softcards / card sets, persistent keys). See
// world_format.hpp for the files. Thread-safe. While a World object lives it
// holds an advisory lock on <dir>/.lock, so one world has one service.
//
// The world is private to the service's user: the directory is created mode
// 0700 and every file 0600, and a directory that group or others may use, or
// that another user owns, is refused. It is opened once, as a descriptor,
// and every file operation goes through that descriptor (no path is looked
// up again after the check).
//
// Implemented in three files: world.cpp (the directory, its lock, the
// enrolled modules and their counters), world_tokens.cpp (softcards and card
// sets) and world_keys.cpp (persistent keys).

#include "model/catalog.hpp"
#include "model/crypto.hpp"
#include "model/file_cache.hpp"
#include "model/fleet_store.hpp"
#include "model/keywrap.hpp"
#include "model/world_format.hpp"
#include "model/world_usage.hpp"
#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/fd.hpp"

#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

namespace preloadrun::sim {

struct WorldOptions {
    std::filesystem::path dir;
    std::uint32_t kdf_iterations = kDefaultKdfIterations; // for tokens created from now on
    WorldLimits limits;
    std::optional<uid_t> owner; // who must own the directory; nullopt: this process's euid
};

// A new random key ident (20 bytes, hex).
std::string new_ident();

// The world is the catalog (tokens, keys) and the fleet store (modules and
// their counters) of a service of simulated HSMs.
class World final : public Catalog, public FleetStore {
public:
    // Opens the world in options.dir, or creates one if the directory is
    // missing or empty. Throws Error(permission) for a directory that is a
    // symlink, is owned by another user or that group or others may use
    // (the message names the fix), Error(usage) for a non-empty directory
    // that is not a world, Error(already_exists) when another service holds
    // the lock, Error(corrupt) naming the file for a damaged `world` or
    // `modules` file.
    explicit World(const WorldOptions& options);
    World(const World&) = delete;
    World& operator=(const World&) = delete;

    const Bytes& id() const noexcept override { return id_; }
    const std::filesystem::path& dir() const noexcept { return dir_.path(); }
    bool created() const noexcept { return created_; } // by this process, just now

    std::vector<EnrolledModule> modules() const override;
    // Enrols one more module (next number, `esn` or a new random ESN) and
    // persists it.
    EnrolledModule enrol_module(const std::string& esn = {}) override;

    // A module's counters as last persisted (nullopt for a module never
    // counted). They outlive the service: see world_format.hpp.
    std::optional<ModuleCounters> counters(std::uint32_t number) const override;
    // Each persists with one atomic write of the counters file, the other
    // modules and fields unchanged, and throws Error when it cannot.
    void save_counters(const std::vector<ModuleCounters>& changed) override;
    void save_generation(std::uint32_t number, std::uint64_t generation) override;
    void reserve_handles(std::uint32_t number, std::uint64_t below) override;
    std::string where() const override { return dir().string() + "/counters"; }

    // Throws Error(already_exists) if a token of that type has that name,
    // Error(limit) past a limit of options.limits. `creator` is recorded in
    // the card file and counted against its quota.
    // Protects the token `hash` by `passphrase` from now on: `token_key` is
    // its key (unlocked with the old passphrase), checked against the hash.
    void set_passphrase(std::span<const std::uint8_t> hash, const SecureBuffer& token_key,
                        const SecureBuffer& passphrase);
    hsm::TokenInfo create_token(hsm::TokenType type, const std::string& name,
                                const SecureBuffer& passphrase,
                                std::optional<uid_t> creator = std::nullopt) override;
    // Every readable token, by type then name; damaged card files are
    // skipped and logged.
    std::vector<hsm::TokenInfo> tokens() const;
    // The readable tokens in the order of their hashes, starting after the
    // hash whose hex is `after` ("": from the first), for as long as `visit`
    // returns true. Reads only the card files it visits.
    void visit_tokens(std::string_view after,
                      const std::function<bool(const hsm::TokenInfo&)>& visit) const override;
    // Throws Error(not_found) or Error(corrupt) naming the file.
    CardRecord card(std::span<const std::uint8_t> hash) const;
    static hsm::TokenInfo info_of(const CardRecord& card);
    // The token key, once the passphrase is checked (KDF then unwrap).
    // Throws Error(wrong_passphrase); nothing changes in the world.
    SecureBuffer unlock_token(const CardRecord& card, const SecureBuffer& passphrase) const;

    // Writes key_<record.ident> with the private part of `key` wrapped under
    // the token key (record.protection set) or the world key. `token_key` is
    // ignored for module-protected keys. record.creator, when set, is counted
    // against its quota: Error(limit) past a limit of options.limits.
    // Error(not_found) when the protecting token is no longer in the world.
    // With refuse_duplicate, Error(already_exists) as refuse_duplicate() says.
    void store_key(KeyRecord& record, const Key& key, const SecureBuffer* token_key,
                   bool refuse_duplicate = false);
    // Throws Error(already_exists), naming the key, when a readable key under
    // the same protection (the same token, or the world) has `label`, or `id`
    // when `id` is not empty.
    void refuse_duplicate(const std::string& label, const Bytes& id,
                          const std::optional<Protection>& protection) const;
    // Every readable persistent key, by label then ident; damaged key files
    // are skipped and logged.
    std::vector<hsm::KeyInfo> keys() const;
    // The readable keys in ident order, starting after the ident `after`
    // ("": from the first), for as long as `visit` returns true. Reads only
    // the key files it visits (and their tokens' card files, for the names).
    void visit_keys(std::string_view after,
                    const std::function<bool(const hsm::KeyInfo&)>& visit) const override;
    // Throws Error(not_found) or Error(corrupt) naming the file.
    KeyRecord key_record(const std::string& ident) const;
    hsm::KeyInfo info_of(const KeyRecord& record) const;
    // Unwraps the private part; Error(corrupt) naming the file when it does
    // not unwrap (altered, or moved from another world or token). The unwrap
    // is checked every time; the decoded key is shared with the modules that
    // hold it already (decoding is most of what a key load costs), so the
    // same key loaded on 32 modules is decoded once.
    std::shared_ptr<const Key> unwrap_key(const KeyRecord& record,
                                          const SecureBuffer* token_key) const;
    // Removes key_<ident>. Throws Error(not_found). Says nothing of who may:
    // the caller checked that.
    void destroy_key(const std::string& ident);

    struct DestroyedToken {
        hsm::TokenInfo token;
        std::vector<KeyRecord> keys; // the keys it protected, destroyed with it
    };
    // Removes the card file of the token with that hash and, with_keys, the
    // key files of the keys it protects: all of them or, when one cannot be
    // removed, none (each is first renamed aside, then they are deleted).
    // Throws Error(not_found) for no such token, Error(conflict) naming the
    // keys when it protects some and not with_keys. Says nothing of who may.
    DestroyedToken destroy_token(std::span<const std::uint8_t> hash, bool with_keys);

    // What the world's files take now (a copy).
    WorldUsage usage() const;

private:
    using NameCache = std::map<Bytes, std::string>;
    std::string path_of(std::string_view name) const;
    // The text of the world's file `name`; Error(not_found) saying `missing`
    // when there is none.
    std::string read_file(const std::string& name, const std::string& missing) const;
    void refuse_foreign_directory() const;
    void take_lock();
    void create_world();
    void open_world();
    void count_files();
    void update_counters(std::uint32_t number, const std::function<void(ModuleCounters&)>& change);
    void persist_counters_locked(std::map<std::uint32_t, ModuleCounters> counters);
    // The names "<prefix><suffix>" in the directory with suffix > after, sorted.
    std::vector<std::string> names_after(std::string_view prefix, std::string_view after) const;
    std::optional<hsm::TokenInfo> read_token(const std::string& name) const;
    std::optional<hsm::KeyInfo> read_key(const std::string& name, NameCache& names) const;
    hsm::KeyInfo info_of(const KeyRecord& record, NameCache& names) const;
    // The readable key records, in ident order (damaged ones are skipped).
    std::vector<KeyRecord> key_records() const;
    void refuse_duplicate_locked(const std::string& label, const Bytes& id,
                                 const std::optional<Protection>& protection) const;
    // "key protected by softcard 'NAME'" (the hash when the card cannot be
    // read), "module-protected key".
    std::string protection_name(const std::optional<Protection>& protection) const;

    Dir dir_;
    std::uint32_t kdf_iterations_;
    Fd lock_;
    Bytes id_;
    SecureBuffer key_;
    bool created_ = false;
    mutable std::mutex mutex_; // modules_, usage_ and read-modify-write of files
    // The key and card files as last decoded (FileCache: read again once changed).
    mutable FileCache<KeyRecord> key_files_;
    mutable FileCache<CardRecord> card_files_;
    // The decoded keys some module holds, by ident and wrapped bytes (a key
    // file that changes is another entry); expired entries are swept as the
    // map grows.
    mutable std::mutex decoded_mutex_;
    mutable std::map<std::string, std::weak_ptr<const Key>, std::less<>> decoded_;
    mutable std::size_t decoded_sweep_at_ = 64;
    std::vector<EnrolledModule> modules_;
    std::map<std::uint32_t, ModuleCounters> counters_;
    WorldUsage usage_;
};

} // namespace preloadrun::sim
