#include "sim/model/world.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <tuple>
#include <unistd.h>

namespace preloadrun::sim {

namespace {

constexpr std::size_t kMaxFile = 1024 * 1024;
constexpr mode_t kDirMode = 0700;
constexpr mode_t kFileMode = 0600;
constexpr std::string_view kCardPrefix = "card_";
constexpr std::string_view kKeyPrefix = "key_";

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.world");
}

std::string token_aad(std::span<const std::uint8_t> hash) {
    return "hsmsim token key " + to_hex(hash);
}

std::string key_aad(const KeyRecord& record) {
    return "hsmsim key " + record.ident + " " + protection_text(record.protection);
}

std::string card_name(std::span<const std::uint8_t> hash) {
    return std::string(kCardPrefix) + to_hex(hash);
}

std::string key_name(const std::string& ident) {
    return std::string(kKeyPrefix) + ident;
}

std::string new_esn() {
    std::string hex = to_hex(random_bytes(6));
    std::string esn;
    for (std::size_t i = 0; i < hex.size(); ++i) {
        if (i > 0 && i % 4 == 0) {
            esn += '-';
        }
        esn += static_cast<char>(std::toupper(static_cast<unsigned char>(hex[i])));
    }
    return esn;
}

bool ignorable_entry(const std::string& name) {
    // Our lock file, and temporary files left by an interrupted atomic write.
    return name == ".lock" || (name.starts_with('.') && name.find(".tmp.") != std::string::npos);
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

// The world holds the wrapped keys and each token's KDF salt and wrapped
// token key: whoever reads them can guess passphrases offline, and whoever
// writes there can destroy or plant keys. Only its owner may do either.
void require_private(const Dir& dir, uid_t owner) {
    const auto st = dir.status();
    const std::string path = dir.path().string();
    if (st.st_uid != owner) {
        throw Error(ErrorCode::permission,
                    "the Security World directory " + path + " belongs to uid " +
                        std::to_string(st.st_uid) + ", not to uid " + std::to_string(owner) +
                        " that runs hsmsim serve: run it as its owner, or run chown -R " +
                        std::to_string(owner) + " " + path);
    }
    if ((st.st_mode & 077) != 0) {
        throw Error(ErrorCode::permission,
                    "the Security World directory " + path + " has mode " + mode_text(st.st_mode) +
                        ": other users may read or change the keys in it; run chmod -R go-rwx " +
                        path);
    }
}

} // namespace

std::string new_ident() {
    return to_hex(random_bytes(kIdentSize));
}

World::World(const WorldOptions& options)
    : kdf_iterations_(options.kdf_iterations), usage_(options.limits) {
    if (options.dir.empty()) {
        throw Error(ErrorCode::usage, "no Security World directory given (set NFAST_KMDATA or "
                                      "use --kmdata)");
    }
    if (kdf_iterations_ == 0 || kdf_iterations_ > kMaxKdfIterations) {
        throw Error(ErrorCode::usage, "KDF iteration count out of range");
    }
    dir_ = Dir::open_or_create(options.dir, kDirMode);
    require_private(dir_, options.owner.value_or(::geteuid()));
    // Refuse a foreign directory before leaving anything (the lock file) in it.
    if (!dir_.stat_entry("world")) {
        refuse_foreign_directory();
    }
    take_lock();
    if (dir_.stat_entry("world")) {
        open_world();
    } else {
        create_world();
    }
    count_files();
}

std::string World::path_of(std::string_view name) const {
    return (dir_ / name).string();
}

void World::refuse_foreign_directory() const {
    for (const auto& name : dir_.list()) {
        if (!ignorable_entry(name)) {
            throw Error(ErrorCode::usage,
                        dir_.path().string() +
                            " is not empty and holds no Security World (no 'world' file; found '" +
                            name +
                            "'); point NFAST_KMDATA at an hsmsim world or an empty directory");
        }
    }
}

void World::take_lock() {
    const auto lock_path = path_of(".lock");
    lock_ = dir_.open_entry(".lock", O_RDWR | O_CREAT, kFileMode);
    if (!lock_) {
        throw_errno("cannot open lock file " + lock_path);
    }
    if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw Error(ErrorCode::already_exists,
                        "the Security World in " + dir_.path().string() +
                            " is already served by another hsmsim (it holds " + lock_path + ")");
        }
        throw_errno("cannot lock " + lock_path);
    }
}

void World::create_world() {
    WorldRecord record{random_bytes(kWorldIdSize), random_secret(kWorldKeySize)};
    // `world` first: a directory holding `world` is a world, whatever else is missing.
    dir_.write_atomic("world", encode_world(record).span(), {.mode = kFileMode});
    dir_.write_atomic("modules", encode_modules({}), {.mode = kFileMode});
    id_ = std::move(record.id);
    key_ = std::move(record.key);
    created_ = true;
    logger()->info("created a new Security World {} in {}", to_hex(id_), dir_.path().string());
}

void World::open_world() {
    auto path = path_of("world");
    if (auto st = dir_.stat_entry("world"); st && (st->st_mode & 077) != 0) {
        logger()->warn("{} is readable or writable by others (mode {:o}); it holds the world "
                       "key: run chmod 600 on it",
                       path, st->st_mode & 0777);
    }
    WorldRecord record = decode_world(dir_.read_secret("world", kMaxFile).span(), path);
    id_ = std::move(record.id);
    key_ = std::move(record.key);
    try {
        modules_ = decode_modules(dir_.read_text("modules", kMaxFile), path_of("modules"));
    } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) {
            throw;
        }
    }
    try {
        for (const auto& c :
             decode_counters(dir_.read_text("counters", kMaxFile), path_of("counters"))) {
            counters_[c.number] = c;
        }
    } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) {
            throw;
        }
    }
    logger()->debug("opened Security World {} in {} ({} modules enrolled)", to_hex(id_),
                    dir_.path().string(), modules_.size());
}

// Counts what is there once; from then on the World's own writes keep the
// count. A damaged key or card file counts its bytes but no creator.
void World::count_files() {
    for (const auto& name : dir_.list()) {
        const auto st = dir_.stat_entry(name);
        if (!st || !S_ISREG(st->st_mode)) {
            continue;
        }
        const auto bytes = static_cast<std::uint64_t>(st->st_size);
        std::optional<uid_t> creator;
        WorldFile kind = WorldFile::other;
        try {
            if (name.starts_with(kKeyPrefix)) {
                kind = WorldFile::key;
                creator = decode_key(dir_.read_text(name, kMaxFile), path_of(name)).creator;
            } else if (name.starts_with(kCardPrefix)) {
                kind = WorldFile::token;
                creator = decode_card(dir_.read_text(name, kMaxFile), path_of(name)).creator;
            }
        } catch (const Error& e) {
            logger()->warn("a damaged file counts for no uid: {}", e.what());
        }
        usage_.record(name, kind, creator, bytes);
    }
    logger()->debug("the Security World's files take {} bytes", usage_.bytes());
}

WorldUsage World::usage() const {
    std::lock_guard lock(mutex_);
    return usage_;
}

std::vector<EnrolledModule> World::modules() const {
    std::lock_guard lock(mutex_);
    return modules_;
}

EnrolledModule World::enrol_module() {
    std::lock_guard lock(mutex_);
    auto modules = modules_;
    EnrolledModule m{static_cast<std::uint32_t>(modules.size() + 1), new_esn()};
    modules.push_back(m);
    const auto text = encode_modules(modules);
    dir_.write_atomic("modules", text, {.mode = kFileMode});
    usage_.record("modules", WorldFile::other, std::nullopt, text.size());
    modules_ = std::move(modules);
    return m;
}

std::optional<ModuleCounters> World::counters(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    auto it = counters_.find(number);
    if (it == counters_.end()) {
        return std::nullopt;
    }
    return it->second;
}

void World::save_counters(const std::vector<ModuleCounters>& changed) {
    std::lock_guard lock(mutex_);
    auto counters = counters_;
    for (const auto& c : changed) {
        counters[c.number] = c;
    }
    persist_counters_locked(std::move(counters));
}

void World::save_generation(std::uint32_t number, std::uint64_t generation) {
    update_counters(number, [generation](ModuleCounters& c) { c.generation = generation; });
}

void World::reserve_handles(std::uint32_t number, std::uint64_t below) {
    update_counters(number, [below](ModuleCounters& c) { c.handles = below; });
}

void World::update_counters(std::uint32_t number,
                            const std::function<void(ModuleCounters&)>& change) {
    std::lock_guard lock(mutex_);
    auto counters = counters_;
    change(counters.try_emplace(number, ModuleCounters{number, 0, 1}).first->second);
    persist_counters_locked(std::move(counters));
}

void World::persist_counters_locked(std::map<std::uint32_t, ModuleCounters> counters) {
    std::vector<ModuleCounters> list;
    list.reserve(counters.size());
    for (const auto& [number, c] : counters) {
        list.push_back(c);
    }
    const auto text = encode_counters(list);
    dir_.write_atomic("counters", text, {.mode = kFileMode});
    usage_.record("counters", WorldFile::other, std::nullopt, text.size());
    counters_ = std::move(counters);
}

std::vector<std::string> World::names_after(std::string_view prefix, std::string_view after) const {
    std::vector<std::string> out;
    for (auto& name : dir_.list()) {
        if (name.starts_with(prefix) && std::string_view(name).substr(prefix.size()) > after) {
            out.push_back(std::move(name));
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

hsm::TokenInfo World::create_token(hsm::TokenType type, const std::string& name,
                                   const SecureBuffer& passphrase, std::optional<uid_t> creator) {
    if (!valid_token_name(name)) {
        throw Error(ErrorCode::usage,
                    "invalid token name '" + name + "' (1..64 characters of A-Z a-z 0-9 . _ -)");
    }
    std::lock_guard lock(mutex_);
    for (const auto& token : tokens()) {
        if (token.type == type && token.name == name) {
            throw Error(ErrorCode::already_exists, std::string(token_type_text(type)) + " '" +
                                                       name + "' already exists (hash " +
                                                       to_hex(token.hash) + ")");
        }
    }
    usage_.check_room(WorldFile::token, creator, 0); // before the KDF's work
    SecureBuffer token_key = random_secret(kWrapKeySize);
    CardRecord card;
    card.type = type;
    card.name = name;
    card.hash = sha256(token_key.span());
    card.hash.resize(hsm::kTokenHashSize);
    card.iterations = kdf_iterations_;
    card.salt = random_bytes(kKdfSaltSize);
    card.creator = creator;
    SecureBuffer kek = derive_key(passphrase, card.salt, card.iterations);
    card.wrapped_key = wrap(kek, token_key.span(), token_aad(card.hash));
    const auto file = card_name(card.hash);
    if (dir_.stat_entry(file)) {
        throw Error(ErrorCode::already_exists, path_of(file) + " already exists");
    }
    const auto text = encode_card(card);
    usage_.check_room(WorldFile::token, creator, text.size());
    dir_.write_atomic(file, text, {.mode = kFileMode});
    usage_.record(file, WorldFile::token, creator, text.size());
    logger()->info("created {} '{}' (hash {}){}", token_type_text(type), name, to_hex(card.hash),
                   creator ? " for uid " + std::to_string(*creator) : std::string());
    return info_of(card);
}

hsm::TokenInfo World::info_of(const CardRecord& card) {
    return hsm::TokenInfo{card.type, card.name, card.hash};
}

std::optional<hsm::TokenInfo> World::read_token(const std::string& name) const {
    try {
        auto card = decode_card(dir_.read_text(name, kMaxFile), path_of(name));
        if (name != card_name(card.hash)) {
            throw Error(ErrorCode::corrupt, path_of(name) + ": hash does not match the name");
        }
        return info_of(card);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            return std::nullopt; // removed since the directory was read
        }
        logger()->warn("skipping a damaged token file: {}", e.what());
        return std::nullopt;
    }
}

void World::visit_tokens(std::string_view after,
                         const std::function<bool(const hsm::TokenInfo&)>& visit) const {
    for (const auto& name : names_after(kCardPrefix, after)) {
        if (auto token = read_token(name); token && !visit(*token)) {
            return;
        }
    }
}

std::vector<hsm::TokenInfo> World::tokens() const {
    std::vector<hsm::TokenInfo> out;
    visit_tokens("", [&](const hsm::TokenInfo& token) {
        out.push_back(token);
        return true;
    });
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.type, a.name) < std::tie(b.type, b.name);
    });
    return out;
}

CardRecord World::card(std::span<const std::uint8_t> hash) const {
    const auto name = card_name(hash);
    std::string text;
    try {
        text = dir_.read_text(name, kMaxFile);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw Error(ErrorCode::not_found, "no softcard or card set with hash " + to_hex(hash) +
                                                  " in the Security World " + dir_.path().string());
        }
        throw;
    }
    auto card = decode_card(text, path_of(name));
    if (!std::equal(card.hash.begin(), card.hash.end(), hash.begin(), hash.end())) {
        throw Error(ErrorCode::corrupt, path_of(name) + ": hash does not match the name");
    }
    return card;
}

SecureBuffer World::unlock_token(const CardRecord& card, const SecureBuffer& passphrase) const {
    SecureBuffer kek = derive_key(passphrase, card.salt, card.iterations);
    SecureBuffer token_key;
    try {
        token_key = unwrap(kek, card.wrapped_key, token_aad(card.hash));
    } catch (const Error&) {
        throw Error(ErrorCode::wrong_passphrase, "wrong passphrase for " +
                                                     std::string(token_type_text(card.type)) +
                                                     " '" + card.name + "'");
    }
    Bytes check = sha256(token_key.span());
    if (token_key.size() != kWrapKeySize ||
        !std::equal(card.hash.begin(), card.hash.end(), check.begin())) {
        throw Error(ErrorCode::corrupt, path_of(card_name(card.hash)) +
                                            ": the token key does not match the token hash");
    }
    return token_key;
}

void World::store_key(KeyRecord& record, const Key& key, const SecureBuffer* token_key,
                      bool refuse_duplicate) {
    if (!valid_ident(record.ident)) {
        throw Error(ErrorCode::internal, "invalid key ident");
    }
    const SecureBuffer* kek = &key_;
    if (record.protection) {
        if (token_key == nullptr) {
            throw Error(ErrorCode::internal, "token-protected key stored without its token key");
        }
        kek = token_key;
    }
    record.type = key.type();
    record.bits = key.bits();
    record.public_der = key.public_der();
    record.wrapped_private = wrap(*kek, key.private_bytes().span(), key_aad(record));
    const auto file = key_name(record.ident);
    const auto text = encode_key(record);
    std::lock_guard lock(mutex_);
    if (dir_.stat_entry(file)) {
        throw Error(ErrorCode::already_exists, path_of(file) + " already exists");
    }
    // Checked under the lock that destroy_token() takes: no key is left
    // behind by a token destroyed meanwhile.
    if (record.protection && !dir_.stat_entry(card_name(record.protection->hash))) {
        throw Error(ErrorCode::not_found, std::string(token_type_text(record.protection->type)) +
                                              " " + to_hex(record.protection->hash) +
                                              " is no longer in the Security World");
    }
    if (refuse_duplicate) {
        refuse_duplicate_locked(record.label, record.id, record.protection);
    }
    usage_.check_room(WorldFile::key, record.creator, text.size());
    dir_.write_atomic(file, text, {.mode = kFileMode});
    usage_.record(file, WorldFile::key, record.creator, text.size());
}

std::vector<KeyRecord> World::key_records() const {
    std::vector<KeyRecord> out;
    for (const auto& name : names_after(kKeyPrefix, "")) {
        try {
            auto record = decode_key(dir_.read_text(name, kMaxFile), path_of(name));
            if (name == key_name(record.ident)) {
                out.push_back(std::move(record));
            }
        } catch (const Error& e) {
            if (e.code() != ErrorCode::not_found) {
                logger()->warn("skipping a damaged key file: {}", e.what());
            }
        }
    }
    return out;
}

std::string World::protection_name(const std::optional<Protection>& protection) const {
    if (!protection) {
        return "module-protected key";
    }
    std::string text = "key protected by " + std::string(token_type_text(protection->type));
    try {
        return text + " '" + card(protection->hash).name + "'";
    } catch (const Error&) {
        return text + " " + to_hex(protection->hash);
    }
}

void World::refuse_duplicate(const std::string& label, const Bytes& id,
                             const std::optional<Protection>& protection) const {
    std::lock_guard lock(mutex_);
    refuse_duplicate_locked(label, id, protection);
}

void World::refuse_duplicate_locked(const std::string& label, const Bytes& id,
                                    const std::optional<Protection>& protection) const {
    for (const auto& other : key_records()) {
        if (other.protection != protection) {
            continue;
        }
        std::string same;
        if (other.label == label) {
            same = "the label '" + label + "'";
        } else if (!id.empty() && other.id == id) {
            same = "the id " + to_hex(id);
        } else {
            continue;
        }
        throw Error(ErrorCode::already_exists, "a " + protection_name(protection) +
                                                   " already has " + same + " (key " + other.ident +
                                                   ")");
    }
}

hsm::KeyInfo World::info_of(const KeyRecord& record) const {
    NameCache names;
    return info_of(record, names);
}

hsm::KeyInfo World::info_of(const KeyRecord& record, NameCache& names) const {
    hsm::KeyInfo info;
    info.ident = record.ident;
    info.label = record.label;
    info.id = record.id;
    info.type = record.type;
    info.bits = record.bits;
    info.persistent = true;
    info.public_der = record.public_der;
    if (record.protection) {
        hsm::TokenInfo token{record.protection->type, {}, record.protection->hash};
        auto it = names.find(token.hash);
        if (it == names.end()) {
            std::string name;
            try {
                name = card(record.protection->hash).name;
            } catch (const Error&) {
                // The name is informative only; lists still show the key.
            }
            it = names.emplace(token.hash, std::move(name)).first;
        }
        token.name = it->second;
        info.token = std::move(token);
    }
    return info;
}

std::optional<hsm::KeyInfo> World::read_key(const std::string& name, NameCache& names) const {
    try {
        auto record = decode_key(dir_.read_text(name, kMaxFile), path_of(name));
        if (name != key_name(record.ident)) {
            throw Error(ErrorCode::corrupt, path_of(name) + ": ident does not match the name");
        }
        return info_of(record, names);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            return std::nullopt; // destroyed since the directory was read
        }
        logger()->warn("skipping a damaged key file: {}", e.what());
        return std::nullopt;
    }
}

void World::visit_keys(std::string_view after,
                       const std::function<bool(const hsm::KeyInfo&)>& visit) const {
    NameCache names;
    for (const auto& name : names_after(kKeyPrefix, after)) {
        if (auto key = read_key(name, names); key && !visit(*key)) {
            return;
        }
    }
}

std::vector<hsm::KeyInfo> World::keys() const {
    std::vector<hsm::KeyInfo> out;
    visit_keys("", [&](const hsm::KeyInfo& key) {
        out.push_back(key);
        return true;
    });
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.label, a.ident) < std::tie(b.label, b.ident);
    });
    return out;
}

KeyRecord World::key_record(const std::string& ident) const {
    if (!valid_ident(ident)) {
        throw Error(ErrorCode::not_found, "no key with ident '" + ident +
                                              "' (an ident is 40 hex "
                                              "digits)");
    }
    const auto name = key_name(ident);
    std::string text;
    try {
        text = dir_.read_text(name, kMaxFile);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw Error(ErrorCode::not_found,
                        "no key " + ident + " in the Security World " + dir_.path().string());
        }
        throw;
    }
    auto record = decode_key(text, path_of(name));
    if (record.ident != ident) {
        throw Error(ErrorCode::corrupt, path_of(name) + ": ident does not match the name");
    }
    return record;
}

Key World::unwrap_key(const KeyRecord& record, const SecureBuffer* token_key) const {
    const SecureBuffer* kek = &key_;
    if (record.protection) {
        if (token_key == nullptr) {
            throw Error(ErrorCode::internal, "token-protected key loaded without its token key");
        }
        kek = token_key;
    }
    auto path = path_of(key_name(record.ident));
    SecureBuffer secret;
    try {
        secret = unwrap(*kek, record.wrapped_private, key_aad(record));
    } catch (const Error&) {
        throw Error(ErrorCode::corrupt, path + ": the private key does not unwrap under the " +
                                            (record.protection ? "token" : "world") +
                                            " key (altered, or copied from another world)");
    }
    try {
        return Key::from_private(record.type, record.bits, secret.span());
    } catch (const Error& e) {
        throw Error(ErrorCode::corrupt, path + ": " + e.what());
    }
}

void World::destroy_key(const std::string& ident) {
    auto record = key_record(ident); // not_found / corrupt: say so before deleting
    const auto name = key_name(record.ident);
    std::lock_guard lock(mutex_);
    if (!dir_.remove(name)) {
        throw Error(ErrorCode::not_found, "no key " + ident);
    }
    usage_.forget(name);
    dir_.sync();
    logger()->info("destroyed key {} ('{}')", ident, record.label);
}

World::DestroyedToken World::destroy_token(std::span<const std::uint8_t> hash, bool with_keys) {
    std::lock_guard lock(mutex_);
    const auto card_record = card(hash); // not_found / corrupt: say so before deleting
    const Protection protection{card_record.type, card_record.hash};
    DestroyedToken out{info_of(card_record), {}};
    for (auto& record : key_records()) {
        if (record.protection == protection) {
            out.keys.push_back(std::move(record));
        }
    }
    std::sort(out.keys.begin(), out.keys.end(), [](const auto& a, const auto& b) {
        return std::tie(a.label, a.ident) < std::tie(b.label, b.ident);
    });
    const std::string what =
        std::string(token_type_text(card_record.type)) + " '" + card_record.name + "'";
    if (!out.keys.empty() && !with_keys) {
        std::string labels;
        for (const auto& key : out.keys) {
            labels += (labels.empty() ? "'" : ", '") + key.label + "'";
        }
        throw Error(ErrorCode::conflict, what + " protects " + std::to_string(out.keys.size()) +
                                             " key(s) (" + labels +
                                             "): destroy them first, or destroy them with it");
    }
    // Every file is renamed aside first (a name that a world skips); if one
    // cannot be, those already renamed come back and nothing is lost. The
    // keys go before the card: no key outlives its token.
    std::vector<std::string> names;
    for (const auto& key : out.keys) {
        names.push_back(key_name(key.ident));
    }
    names.push_back(card_name(card_record.hash));
    std::vector<std::pair<std::string, std::string>> aside;
    try {
        for (const auto& name : names) {
            auto hidden = "." + name + ".tmp.destroyed";
            dir_.rename(name, hidden);
            aside.emplace_back(name, std::move(hidden));
        }
    } catch (const Error&) {
        for (auto it = aside.rbegin(); it != aside.rend(); ++it) {
            try {
                dir_.rename(it->second, it->first);
            } catch (const Error& e) {
                logger()->error("destroying {}: {} stays aside: {}", what, it->first, e.what());
            }
        }
        throw;
    }
    for (const auto& [name, hidden] : aside) {
        usage_.forget(name);
        try {
            dir_.remove(hidden);
        } catch (const Error& e) {
            logger()->warn("destroyed {}, but {}", what, e.what());
        }
    }
    try {
        dir_.sync();
    } catch (const Error& e) {
        logger()->warn("destroyed {}, but {}", what, e.what());
    }
    logger()->info("destroyed {} (hash {}) and {} key(s) it protected", what,
                   to_hex(card_record.hash), out.keys.size());
    return out;
}

} // namespace preloadrun::sim
