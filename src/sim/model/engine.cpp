#include "sim/model/engine.hpp"

#include "preloadrun/common/log.hpp"
#include "sim/model/key_rights.hpp"
#include "sim/model/keywrap.hpp"

#include <set>

namespace preloadrun::sim {

namespace {

std::string token_label(const hsm::TokenInfo& token) {
    std::string text(token_type_text(token.type));
    if (!token.name.empty()) {
        text += " '" + token.name + "'";
    }
    return text + " (hash " + to_hex(token.hash) + ")";
}

std::string unloaded_text(std::size_t unloaded) {
    return unloaded == 0 ? std::string()
                         : "; unloaded " + std::to_string(unloaded) + " object(s) loaded from it";
}

} // namespace

hsm::ObjectHandle Engine::load_token(std::uint32_t module, const Bytes& token_hash,
                                     const SecureBuffer& passphrase, uid_t uid, ClientId client) {
    Module& m = fleet_.module(module);
    auto card = world_.card(token_hash);
    auto token_key = unlocker_.unlock(card, passphrase, uid);
    return m.operate(uid, OpKind::management, [&] {
        auto handle = m.add_token(uid, client, World::info_of(card), std::move(token_key));
        log::get("sim.engine")
            ->debug("uid {} loaded {} on module {}: handle {}", uid,
                    token_label(World::info_of(card)), module, handle);
        return handle;
    });
}

hsm::ObjectHandle Engine::load_key(std::uint32_t module, const std::string& ident,
                                   hsm::ObjectHandle token_handle, uid_t uid, ClientId client) {
    Module& m = fleet_.module(module);
    return m.operate(uid, OpKind::management, [&] {
        auto record = world_.key_record(ident);
        auto info = world_.info_of(record);
        std::shared_ptr<const TokenObject> token;
        if (record.protection) {
            if (token_handle == 0) {
                throw Error(ErrorCode::permission,
                            "key " + ident + " is protected by " + token_label(*info.token) +
                                ": load that token on module " + std::to_string(module) +
                                " and pass its handle");
            }
            token = m.token(token_handle, uid);
            if (token->info.hash != record.protection->hash ||
                token->info.type != record.protection->type) {
                throw Error(ErrorCode::permission, "token handle " + std::to_string(token_handle) +
                                                       " on module " + std::to_string(module) +
                                                       " is " + token_label(token->info) +
                                                       ", but key " + ident + " is protected by " +
                                                       token_label(*info.token));
            }
        } else if (token_handle != 0) {
            throw Error(ErrorCode::usage,
                        "key " + ident + " is module-protected: load it with token handle 0");
        }
        auto key =
            std::make_shared<const Key>(world_.unwrap_key(record, token ? &token->key : nullptr));
        return m.add_key(uid, client, KeyObject{std::move(info), std::move(key), token_handle});
    });
}

void Engine::unload(std::uint32_t module, hsm::ObjectHandle handle, uid_t uid) {
    Module& m = fleet_.module(module);
    m.operate(uid, OpKind::management, [&] { m.unload(handle, uid); });
}

hsm::GeneratedKey Engine::generate_key(std::uint32_t module, const hsm::KeySpec& spec, uid_t uid,
                                       ClientId client) {
    Module& m = fleet_.module(module);
    return m.operate(uid, OpKind::crypto, [&] {
        std::shared_ptr<const TokenObject> token;
        if (spec.token_handle != 0) {
            token = m.token(spec.token_handle, uid);
        }
        std::optional<Protection> protection;
        if (token) {
            protection = Protection{token->info.type, token->info.hash};
        }
        if (spec.persistent && spec.refuse_duplicate) {
            // Before the work of generating; store_key() checks again.
            world_.refuse_duplicate(spec.label, spec.id, protection);
        }
        auto key = std::make_shared<const Key>(Key::generate(spec.type, spec.bits));
        hsm::KeyInfo info;
        info.label = spec.label;
        info.id = spec.id;
        info.type = key->type();
        info.bits = key->bits();
        info.persistent = spec.persistent;
        info.public_der = key->public_der();
        if (token) {
            info.token = token->info;
        }
        if (spec.persistent) {
            KeyRecord record;
            record.ident = new_ident();
            record.label = spec.label;
            record.id = spec.id;
            record.creator = uid;
            record.protection = protection;
            world_.store_key(record, *key, token ? &token->key : nullptr, spec.refuse_duplicate);
            info.ident = record.ident;
        } else {
            info.ident = new_ident();
        }
        auto handle = m.add_key(uid, client, KeyObject{info, std::move(key), spec.token_handle});
        log::get("sim.engine")
            ->debug("uid {} generated {} key {} ('{}') on module {}: handle {}", uid,
                    describe(info.type, info.bits), info.ident, info.label, module, handle);
        return hsm::GeneratedKey{handle, std::move(info)};
    });
}

void Engine::destroy_key(std::uint32_t module, const std::string& ident,
                         hsm::ObjectHandle token_handle, uid_t uid) {
    const auto record = world_.key_record(ident);
    if (!record.protection) {
        if (token_handle != 0) {
            throw Error(ErrorCode::usage,
                        "key " + ident + " is module-protected: destroy it with token handle 0");
        }
        check_may_destroy(record, uid, service_uid_);
        world_.destroy_key(ident);
        log::get("sim.engine")
            ->info("uid {} destroyed module-protected key {}{}", uid, ident,
                   unloaded_text(unload_key(ident)));
        return;
    }
    if (token_handle == 0) {
        throw Error(ErrorCode::permission,
                    "key " + ident + " is protected by " +
                        token_label(*world_.info_of(record).token) +
                        ": destroying it needs that token loaded (with its passphrase) by uid " +
                        std::to_string(uid) + ", and its module and handle in the request");
    }
    Module& m = fleet_.module(module);
    m.operate(uid, OpKind::management, [&] {
        const auto token = m.token(token_handle, uid);
        check_token_protects(record, *token, token_handle, module);
        world_.destroy_key(ident);
    });
    log::get("sim.engine")
        ->info("uid {} destroyed key {} with its token loaded on module {}{}", uid, ident, module,
               unloaded_text(unload_key(ident)));
}

void Engine::destroy_token(std::uint32_t module, const Bytes& token_hash,
                           hsm::ObjectHandle token_handle, bool with_keys, uid_t uid) {
    const auto card = world_.card(token_hash); // not_found before anything else
    const auto info = World::info_of(card);
    if (token_handle == 0) {
        throw Error(ErrorCode::permission, "destroying " + token_label(info) +
                                               " needs it loaded (with its passphrase) by uid " +
                                               std::to_string(uid) +
                                               ", and its module and handle in the request");
    }
    Module& m = fleet_.module(module);
    auto destroyed = m.operate(uid, OpKind::management, [&] {
        const auto token = m.token(token_handle, uid);
        if (token->info.hash != card.hash || token->info.type != card.type) {
            throw Error(ErrorCode::permission,
                        "token handle " + std::to_string(token_handle) + " on module " +
                            std::to_string(module) + " is " + token_label(token->info) + ", not " +
                            token_label(info) +
                            ": destroying a token needs that token loaded with its passphrase");
        }
        return world_.destroy_token(token_hash, with_keys);
    });
    std::set<std::string> idents;
    for (const auto& key : destroyed.keys) {
        idents.insert(key.ident);
    }
    // The token's objects go with the keys loaded under them; its keys are
    // matched by ident as well.
    const auto unloaded = fleet_.unload_matching([&](const ObjectTable::Object& object) {
        if (object.token) {
            return object.token->info.hash == card.hash && object.token->info.type == card.type;
        }
        return object.key->info.persistent && idents.contains(object.key->info.ident);
    });
    log::get("sim.engine")
        ->info("uid {} destroyed {} and the {} key(s) it protected{}", uid, token_label(info),
               destroyed.keys.size(), unloaded_text(unloaded));
}

std::size_t Engine::unload_key(const std::string& ident) {
    return fleet_.unload_matching([&](const ObjectTable::Object& object) {
        return object.key && object.key->info.persistent && object.key->info.ident == ident;
    });
}

Bytes Engine::sign(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                   const Bytes& data, uid_t uid) {
    Module& m = fleet_.module(module);
    return m.operate(uid, OpKind::crypto, [&] { return m.key(key, uid)->key->sign(mech, data); });
}

void Engine::verify(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                    const Bytes& data, const Bytes& signature, uid_t uid) {
    Module& m = fleet_.module(module);
    m.operate(uid, OpKind::crypto, [&] { m.key(key, uid)->key->verify(mech, data, signature); });
}

Bytes Engine::encrypt(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                      const Bytes& data, uid_t uid) {
    Module& m = fleet_.module(module);
    return m.operate(uid, OpKind::crypto,
                     [&] { return m.key(key, uid)->key->encrypt(mech, data); });
}

Bytes Engine::decrypt(std::uint32_t module, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                      const Bytes& data, uid_t uid) {
    Module& m = fleet_.module(module);
    return m.operate(uid, OpKind::crypto,
                     [&] { return m.key(key, uid)->key->decrypt(mech, data); });
}

Bytes Engine::random(std::uint32_t module, std::uint32_t length, uid_t uid) {
    Module& m = fleet_.module(module);
    return m.operate(uid, OpKind::crypto, [&] { return random_bytes(length); });
}

} // namespace preloadrun::sim
