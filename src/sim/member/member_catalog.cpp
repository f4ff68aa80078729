#include "member/member_catalog.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"

#include <map>
#include <openssl/sha.h>
#include <utility>

namespace preloadrun::sim::member {

namespace {

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.member");
}

Bytes sha1(const std::string& text) {
    Bytes out(SHA_DIGEST_LENGTH);
    SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out.data());
    return out;
}

std::optional<hsm::KeyType> key_type_of(const worker::Key& key) {
    if (key.key_type() == CKK_RSA) {
        return hsm::KeyType::rsa;
    }
    if (key.key_type() == CKK_EC) {
        if (key.bits() == 256) {
            return hsm::KeyType::ec_p256;
        }
        if (key.bits() == 384) {
            return hsm::KeyType::ec_p384;
        }
    }
    return std::nullopt;
}

Bytes bytes_of(const std::string& field) {
    return Bytes(field.begin(), field.end());
}

// The public key objects of an inventory by CKA_ID and key type (the first
// of each).
using PublicKeys = std::map<std::pair<std::string, std::uint64_t>, const worker::Key*>;
PublicKeys public_keys(const worker::InventoryReply& inventory) {
    PublicKeys out;
    for (const auto& key : inventory.keys()) {
        if (key.object_class() == CKO_PUBLIC_KEY) {
            out.emplace(std::make_pair(key.id(), key.key_type()), &key);
        }
    }
    return out;
}

// Private key `key` on that member: its handles and public key (its own,
// for RSA, or the public key object's with the same CKA_ID and type).
DeviceKey device_key(const worker::Key& key, const PublicKeys& publics) {
    DeviceKey out{key.handle(), 0, bytes_of(key.public_der())};
    if (auto it = publics.find({key.id(), key.key_type()}); it != publics.end()) {
        out.public_handle = it->second->handle();
        if (out.public_der.empty()) {
            out.public_der = bytes_of(it->second->public_der());
        }
    }
    return out;
}

} // namespace

hsm::TokenInfo MemberCatalog::token_of(const std::string& set) {
    return hsm::TokenInfo{hsm::TokenType::softcard, set, sha1("preloadrun token set\n" + set)};
}

std::string MemberCatalog::ident_of(const std::string& set, const Bytes& id,
                                    std::uint64_t key_type) {
    return to_hex(sha1("preloadrun member key\n" + set + "\n" + to_hex(id) + "\n" +
                       std::to_string(key_type)));
}

void MemberCatalog::set_sets(const std::vector<TokenSetConfig>& sets) {
    std::lock_guard lock(mutex_);
    tokens_.clear();
    for (const auto& set : sets) {
        auto token = token_of(set.name);
        tokens_[to_hex(token.hash)] = token;
    }
}

std::map<std::string, DeviceKey>
MemberCatalog::add_inventory(const std::string& member, const std::string& set,
                             const worker::InventoryReply& inventory) {
    const auto token = token_of(set);
    std::map<std::string, DeviceKey> usable;
    const auto publics = public_keys(inventory);
    std::lock_guard lock(mutex_);
    for (const auto& key : inventory.keys()) {
        if (key.object_class() != CKO_PRIVATE_KEY) {
            continue;
        }
        const auto id = bytes_of(key.id());
        const auto type = key_type_of(key);
        auto device = device_key(key, publics);
        const auto& spki = device.public_der;
        if (!type || spki.empty() || id.empty()) {
            if (unusable_.emplace(member, to_hex(id)).second) {
                logger()->warn("member {}: key \"{}\" (CKA_ID {}) is not served: {}", member,
                               key.label(), id.empty() ? "empty" : to_hex(id),
                               id.empty() ? "it has no CKA_ID"
                               : !type    ? "only RSA and EC P-256/P-384 keys are"
                                          : "no public key object shows its public key");
            }
            continue;
        }
        const auto ident = ident_of(set, id, key.key_type());
        auto it = keys_.find(ident);
        if (it == keys_.end()) {
            CatalogKey entry;
            entry.key_type = key.key_type();
            entry.info.ident = ident;
            entry.info.label = key.label();
            entry.info.id = id;
            entry.info.type = *type;
            entry.info.bits = key.bits();
            entry.info.persistent = true;
            entry.info.token = token;
            entry.info.public_der = spki;
            keys_.emplace(ident, std::move(entry));
            usable.emplace(ident, std::move(device));
            continue;
        }
        if (it->second.info.public_der != spki) {
            if (refused_.emplace(member, ident).second) {
                logger()->error("member {}: key \"{}\" (CKA_ID {}) of set {} is a different key "
                                "from the one the other members hold: it is not used on {}",
                                member, key.label(), to_hex(id), set, member);
            }
            continue;
        }
        if (refused_.erase({member, ident}) > 0) {
            logger()->info("member {}: key \"{}\" (CKA_ID {}) is the same key again: used", member,
                           key.label(), to_hex(id));
        }
        usable.emplace(ident, std::move(device));
    }
    return usable;
}

CatalogKey MemberCatalog::key(const std::string& ident) const {
    std::lock_guard lock(mutex_);
    auto it = keys_.find(ident);
    if (it == keys_.end()) {
        throw Error(ErrorCode::not_found, "no key " + ident + " on the members");
    }
    return it->second;
}

bool MemberCatalog::is_refused(const std::string& member, const std::string& ident) const {
    std::lock_guard lock(mutex_);
    return refused_.count({member, ident}) > 0;
}

void MemberCatalog::refuse(const std::string& member, const std::string& ident,
                           const std::string& why) {
    std::lock_guard lock(mutex_);
    if (refused_.emplace(member, ident).second) {
        logger()->error("member {}: {}: it is not used for that key", member, why);
    }
}

void MemberCatalog::visit_tokens(std::string_view after,
                                 const std::function<bool(const hsm::TokenInfo&)>& visit) const {
    std::vector<hsm::TokenInfo> tokens;
    {
        std::lock_guard lock(mutex_);
        for (auto it = tokens_.upper_bound(std::string(after)); it != tokens_.end(); ++it) {
            tokens.push_back(it->second);
        }
    }
    for (const auto& token : tokens) {
        if (!visit(token)) {
            return;
        }
    }
}

void MemberCatalog::visit_keys(std::string_view after,
                               const std::function<bool(const hsm::KeyInfo&)>& visit) const {
    std::vector<hsm::KeyInfo> keys;
    {
        std::lock_guard lock(mutex_);
        for (auto it = keys_.upper_bound(std::string(after)); it != keys_.end(); ++it) {
            if (tokens_.count(to_hex(it->second.info.token->hash)) > 0) {
                keys.push_back(it->second.info);
            }
        }
    }
    for (const auto& key : keys) {
        if (!visit(key)) {
            return;
        }
    }
}

hsm::TokenInfo MemberCatalog::create_token(hsm::TokenType, const std::string&, const SecureBuffer&,
                                           std::optional<uid_t>) {
    throw Error(ErrorCode::usage, "the token sets of PKCS#11 members are named in the fleet "
                                  "configuration, not created through this service");
}

} // namespace preloadrun::sim::member
