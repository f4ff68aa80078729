// World: the persistent keys of a Security World (world_files.hpp).

#include "model/world.hpp"
#include "model/world_files.hpp"
#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <tuple>

namespace preloadrun::sim {

using namespace world_files;

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
    record.check_value = key.check_value();
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
    info.extractable = record.extractable;
    info.imported = record.imported;
    info.check_value = record.check_value;
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
    return key_files_.get(dir_, name, [&] {
        const auto text = read_file(name, "no key " + ident);
        auto record = decode_key(text, path_of(name));
        if (record.ident != ident) {
            throw Error(ErrorCode::corrupt, path_of(name) + ": ident does not match the name");
        }
        return record;
    });
}

std::shared_ptr<const Key> World::unwrap_key(const KeyRecord& record,
                                             const SecureBuffer* token_key) const {
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
    // The wrapped bytes authenticate under kek to this secret: the same
    // ident and wrapped bytes are the same key.
    std::string name = record.ident;
    name.append(record.wrapped_private.begin(), record.wrapped_private.end());
    {
        std::lock_guard lock(decoded_mutex_);
        if (auto it = decoded_.find(name); it != decoded_.end()) {
            if (auto key = it->second.lock()) {
                return key;
            }
        }
    }
    std::shared_ptr<const Key> key;
    try {
        key =
            std::make_shared<const Key>(Key::from_private(record.type, record.bits, secret.span()));
    } catch (const Error& e) {
        throw Error(ErrorCode::corrupt, path + ": " + e.what());
    }
    std::lock_guard lock(decoded_mutex_);
    decoded_[std::move(name)] = key;
    if (decoded_.size() >= decoded_sweep_at_) {
        std::erase_if(decoded_, [](const auto& entry) { return entry.second.expired(); });
        decoded_sweep_at_ = std::max<std::size_t>(64, 2 * decoded_.size());
    }
    return key;
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

} // namespace preloadrun::sim
