#include "sim/world.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/log.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun::sim {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxFile = 1024 * 1024;
constexpr mode_t kPublicMode = 0644;
constexpr mode_t kSecretMode = 0600;

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.world");
}

std::string read_world_file(const fs::path& path) {
    return read_text_file(path, kMaxFile);
}

std::string token_aad(std::span<const std::uint8_t> hash) {
    return "hsmsim token key " + to_hex(hash);
}

std::string key_aad(const KeyRecord& record) {
    return "hsmsim key " + record.ident + " " + protection_text(record.protection);
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

bool path_exists(const fs::path& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0;
}

std::string quoted(const fs::path& p) {
    return p.string();
}

} // namespace

std::string new_ident() {
    return to_hex(random_bytes(kIdentSize));
}

World::World(const WorldOptions& options)
    : dir_(options.dir), kdf_iterations_(options.kdf_iterations) {
    if (dir_.empty()) {
        throw Error(ErrorCode::usage, "no Security World directory given (set NFAST_KMDATA or "
                                      "use --kmdata)");
    }
    if (kdf_iterations_ == 0 || kdf_iterations_ > kMaxKdfIterations) {
        throw Error(ErrorCode::usage, "KDF iteration count out of range");
    }
    if (::mkdir(dir_.c_str(), 0755) != 0 && errno != EEXIST) {
        throw_errno("cannot create the Security World directory " + quoted(dir_));
    }
    struct stat st {};
    if (::stat(dir_.c_str(), &st) != 0) {
        throw_errno("cannot stat " + quoted(dir_));
    }
    if (!S_ISDIR(st.st_mode)) {
        throw Error(ErrorCode::usage, quoted(dir_) + ": not a directory");
    }
    if ((st.st_mode & S_IWOTH) != 0) {
        throw Error(ErrorCode::permission, quoted(dir_) + ": writable by others; run chmod o-w "
                                                          "on it");
    }
    // Refuse a foreign directory before leaving anything (the lock file) in it.
    const bool has_world = path_exists(dir_ / "world");
    if (!has_world) {
        std::error_code ec;
        for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
            auto name = it->path().filename().string();
            if (!ignorable_entry(name)) {
                throw Error(ErrorCode::usage,
                            quoted(dir_) +
                                " is not empty and holds no Security World (no 'world' "
                                "file; found '" +
                                name +
                                "'); point NFAST_KMDATA at an hsmsim world or an "
                                "empty directory");
            }
        }
        if (ec) {
            throw Error(ErrorCode::io, "cannot list " + quoted(dir_) + ": " + ec.message());
        }
    }
    auto lock_path = dir_ / ".lock";
    lock_ = Fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!lock_) {
        throw_errno("cannot open lock file " + quoted(lock_path));
    }
    if (::flock(lock_.get(), LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            throw Error(ErrorCode::already_exists,
                        "the Security World in " + quoted(dir_) +
                            " is already served by another hsmsim (it holds " + quoted(lock_path) +
                            ")");
        }
        throw_errno("cannot lock " + quoted(lock_path));
    }
    if (path_exists(dir_ / "world")) {
        open_world();
    } else {
        create_world();
    }
}

void World::create_world() {
    WorldRecord record{random_bytes(kWorldIdSize), random_secret(kWorldKeySize)};
    // `world` first: a directory holding `world` is a world, whatever else is missing.
    write_file_atomic(dir_ / "world", encode_world(record), {.mode = kSecretMode});
    write_file_atomic(dir_ / "modules", encode_modules({}), {.mode = kPublicMode});
    id_ = std::move(record.id);
    key_ = std::move(record.key);
    created_ = true;
    logger()->info("created a new Security World {} in {}", to_hex(id_), quoted(dir_));
}

void World::open_world() {
    auto path = dir_ / "world";
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
        logger()->warn("{} is readable or writable by others (mode {:o}); it holds the world "
                       "key: run chmod 600 on it",
                       quoted(path), st.st_mode & 0777);
    }
    std::string text = read_world_file(path);
    WorldRecord record = decode_world(text, quoted(path));
    OPENSSL_cleanse(text.data(), text.size());
    id_ = std::move(record.id);
    key_ = std::move(record.key);
    auto modules_path = dir_ / "modules";
    try {
        modules_ = decode_modules(read_world_file(modules_path), quoted(modules_path));
    } catch (const Error& e) {
        if (e.code() != ErrorCode::not_found) {
            throw;
        }
    }
    logger()->debug("opened Security World {} in {} ({} modules enrolled)", to_hex(id_),
                    quoted(dir_), modules_.size());
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
    write_file_atomic(dir_ / "modules", encode_modules(modules), {.mode = kPublicMode});
    modules_ = std::move(modules);
    return m;
}

fs::path World::card_path(std::span<const std::uint8_t> hash) const {
    return dir_ / ("card_" + to_hex(hash));
}

fs::path World::key_path(const std::string& ident) const {
    return dir_ / ("key_" + ident);
}

std::vector<fs::path> World::files_with_prefix(std::string_view prefix) const {
    std::vector<fs::path> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir_, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().filename().string().starts_with(prefix)) {
            out.push_back(it->path());
        }
    }
    if (ec) {
        throw Error(ErrorCode::io, "cannot list " + quoted(dir_) + ": " + ec.message());
    }
    std::sort(out.begin(), out.end());
    return out;
}

hsm::TokenInfo World::create_token(hsm::TokenType type, const std::string& name,
                                   const SecureBuffer& passphrase) {
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
    SecureBuffer token_key = random_secret(kWrapKeySize);
    CardRecord card;
    card.type = type;
    card.name = name;
    card.hash = sha256(token_key.span());
    card.hash.resize(hsm::kTokenHashSize);
    card.iterations = kdf_iterations_;
    card.salt = random_bytes(kKdfSaltSize);
    SecureBuffer kek = derive_key(passphrase, card.salt, card.iterations);
    card.wrapped_key = wrap(kek, token_key.span(), token_aad(card.hash));
    auto path = card_path(card.hash);
    if (path_exists(path)) {
        throw Error(ErrorCode::already_exists, quoted(path) + " already exists");
    }
    write_file_atomic(path, encode_card(card), {.mode = kPublicMode});
    logger()->info("created {} '{}' (hash {})", token_type_text(type), name, to_hex(card.hash));
    return info_of(card);
}

hsm::TokenInfo World::info_of(const CardRecord& card) {
    return hsm::TokenInfo{card.type, card.name, card.hash};
}

std::vector<hsm::TokenInfo> World::tokens() const {
    std::vector<hsm::TokenInfo> out;
    for (const auto& path : files_with_prefix("card_")) {
        try {
            auto card = decode_card(read_world_file(path), quoted(path));
            if (path.filename().string() != "card_" + to_hex(card.hash)) {
                throw Error(ErrorCode::corrupt, quoted(path) + ": hash does not match the name");
            }
            out.push_back(info_of(card));
        } catch (const Error& e) {
            logger()->warn("skipping a damaged token file: {}", e.what());
        }
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.type, a.name) < std::tie(b.type, b.name);
    });
    return out;
}

CardRecord World::card(std::span<const std::uint8_t> hash) const {
    auto path = card_path(hash);
    std::string text;
    try {
        text = read_world_file(path);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw Error(ErrorCode::not_found, "no softcard or card set with hash " + to_hex(hash) +
                                                  " in the Security World " + quoted(dir_));
        }
        throw;
    }
    auto card = decode_card(text, quoted(path));
    if (!std::equal(card.hash.begin(), card.hash.end(), hash.begin(), hash.end())) {
        throw Error(ErrorCode::corrupt, quoted(path) + ": hash does not match the name");
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
        throw Error(ErrorCode::corrupt,
                    quoted(card_path(card.hash)) + ": the token key does not match the token hash");
    }
    return token_key;
}

void World::store_key(KeyRecord& record, const Key& key, const SecureBuffer* token_key) {
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
    auto path = key_path(record.ident);
    std::lock_guard lock(mutex_);
    if (path_exists(path)) {
        throw Error(ErrorCode::already_exists, quoted(path) + " already exists");
    }
    write_file_atomic(path, encode_key(record), {.mode = kPublicMode});
}

hsm::KeyInfo World::info_of(const KeyRecord& record) const {
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
        try {
            token.name = card(record.protection->hash).name;
        } catch (const Error&) {
            // The name is informative only; lists still show the key.
        }
        info.token = std::move(token);
    }
    return info;
}

std::vector<hsm::KeyInfo> World::keys() const {
    std::vector<hsm::KeyInfo> out;
    for (const auto& path : files_with_prefix("key_")) {
        try {
            auto record = decode_key(read_world_file(path), quoted(path));
            if (path.filename().string() != "key_" + record.ident) {
                throw Error(ErrorCode::corrupt, quoted(path) + ": ident does not match the name");
            }
            out.push_back(info_of(record));
        } catch (const Error& e) {
            logger()->warn("skipping a damaged key file: {}", e.what());
        }
    }
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
    auto path = key_path(ident);
    std::string text;
    try {
        text = read_world_file(path);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::not_found) {
            throw Error(ErrorCode::not_found,
                        "no key " + ident + " in the Security World " + quoted(dir_));
        }
        throw;
    }
    auto record = decode_key(text, quoted(path));
    if (record.ident != ident) {
        throw Error(ErrorCode::corrupt, quoted(path) + ": ident does not match the name");
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
    auto path = quoted(key_path(record.ident));
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
    std::lock_guard lock(mutex_);
    auto path = key_path(record.ident);
    if (::unlink(path.c_str()) != 0) {
        if (errno == ENOENT) {
            throw Error(ErrorCode::not_found, "no key " + ident);
        }
        throw_errno("cannot remove " + quoted(path));
    }
    sync_dir(dir_);
    logger()->info("destroyed key {} ('{}')", ident, record.label);
}

} // namespace preloadrun::sim
