#include "model/destroyer.hpp"

#include "model/key_rights.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <set>

namespace preloadrun::sim {

namespace {

std::string unloaded_text(std::size_t unloaded) {
    return unloaded == 0 ? std::string()
                         : "; unloaded " + std::to_string(unloaded) + " object(s) loaded from it";
}

} // namespace

void Destroyer::destroy_key(std::uint32_t module, const std::string& ident,
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
    fleet_.module(module).with_token(Caller{uid, kNoClient}, token_handle,
                                     [&](const hsm::TokenInfo& token) {
                                         check_token_protects(record, token, token_handle, module);
                                         world_.destroy_key(ident);
                                     });
    log::get("sim.engine")
        ->info("uid {} destroyed key {} with its token loaded on module {}{}", uid, ident, module,
               unloaded_text(unload_key(ident)));
}

void Destroyer::destroy_token(std::uint32_t module, const Bytes& token_hash,
                              hsm::ObjectHandle token_handle, bool with_keys, uid_t uid) {
    const auto card = world_.card(token_hash); // not_found before anything else
    const auto info = World::info_of(card);
    if (token_handle == 0) {
        throw Error(ErrorCode::permission, "destroying " + token_label(info) +
                                               " needs it loaded (with its passphrase) by uid " +
                                               std::to_string(uid) +
                                               ", and its module and handle in the request");
    }
    World::DestroyedToken destroyed;
    fleet_.module(module).with_token(
        Caller{uid, kNoClient}, token_handle, [&](const hsm::TokenInfo& token) {
            if (token.hash != card.hash || token.type != card.type) {
                throw Error(ErrorCode::permission,
                            "token handle " + std::to_string(token_handle) + " on module " +
                                std::to_string(module) + " is " + token_label(token) + ", not " +
                                token_label(info) +
                                ": destroying a token needs that token loaded with its passphrase");
            }
            destroyed = world_.destroy_token(token_hash, with_keys);
        });
    std::set<std::string> idents;
    for (const auto& key : destroyed.keys) {
        idents.insert(key.ident);
    }
    // The token's objects go with the keys loaded under them; its keys are
    // matched by ident as well.
    const auto unloaded = fleet_.unload_matching([&](const LoadedObject& object) {
        if (object.token != nullptr) {
            return object.token->hash == card.hash && object.token->type == card.type;
        }
        return object.key->persistent && idents.contains(object.key->ident);
    });
    log::get("sim.engine")
        ->info("uid {} destroyed {} and the {} key(s) it protected{}", uid, token_label(info),
               destroyed.keys.size(), unloaded_text(unloaded));
}

std::size_t Destroyer::unload_key(const std::string& ident) {
    return fleet_.unload_matching([&](const LoadedObject& object) {
        return object.key != nullptr && object.key->persistent && object.key->ident == ident;
    });
}

} // namespace preloadrun::sim
