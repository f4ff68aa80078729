#include "objects.hpp"

#include "log.hpp"

#include <cstring>
#include <set>

namespace preloadrun::pkcs11 {

std::optional<hsm::ObjectHandle> KeyObject::handle_on(std::uint32_t module) const {
    std::lock_guard lock(mutex_);
    auto it = loaded_.find(module);
    if (it == loaded_.end()) {
        return std::nullopt;
    }
    return it->second;
}

void KeyObject::set_handle(std::uint32_t module, hsm::ObjectHandle handle) {
    std::lock_guard lock(mutex_);
    loaded_[module] = handle;
    in_use_ = true;
}

void KeyObject::forget(std::uint32_t module) {
    std::lock_guard lock(mutex_);
    loaded_.erase(module);
    refused_.erase(module);
}

void KeyObject::refuse(std::uint32_t module) {
    std::lock_guard lock(mutex_);
    refused_.insert(module);
}

bool KeyObject::refused_anywhere() const {
    std::lock_guard lock(mutex_);
    return !refused_.empty();
}

bool KeyObject::refused_on(std::uint32_t module) const {
    std::lock_guard lock(mutex_);
    return refused_.count(module) > 0;
}

bool KeyObject::in_use() const {
    std::lock_guard lock(mutex_);
    return in_use_;
}

void KeyObject::take_state_of(const KeyObject& other) {
    std::scoped_lock lock(mutex_, other.mutex_);
    loaded_ = other.loaded_;
    refused_ = other.refused_;
    lost_ = other.lost_;
    in_use_ = other.in_use_;
}

void KeyObject::mark_lost() {
    std::lock_guard lock(mutex_);
    lost_ = true;
    loaded_.clear();
}

bool KeyObject::lost() const {
    std::lock_guard lock(mutex_);
    return lost_;
}

CK_OBJECT_HANDLE ObjectStore::handle_for(const std::string& ident, CK_OBJECT_CLASS cls) {
    auto [it, inserted] = issued_.try_emplace({ident, cls}, next_);
    if (inserted) {
        ++next_;
    }
    return it->second;
}

std::shared_ptr<KeyObject> ObjectStore::make(const hsm::KeyInfo& info, CK_SLOT_ID slot,
                                             bool session) {
    auto key = std::make_shared<KeyObject>();
    key->info = info;
    key->info.persistent = !session;
    key->slot = slot;
    key->session = session;
    if (hsm::is_object(info.type)) {
        key->main_attrs = Attributes::decode(info.public_der);
        key->main_attrs.set_bool(CKA_TOKEN, !session);
        return key;
    }
    const PublicParts parts = parse_public(key->info);
    const bool is_private = key->info.token.has_value();
    if (hsm::is_secret(info.type)) {
        key->main_attrs = key_attributes(key->info, parts, CKO_SECRET_KEY, is_private);
    } else {
        key->main_attrs = key_attributes(key->info, parts, CKO_PRIVATE_KEY, is_private);
        key->public_attrs = key_attributes(key->info, parts, CKO_PUBLIC_KEY, false);
    }
    return key;
}

CK_OBJECT_CLASS ObjectStore::main_class(const KeyObject& key) {
    if (hsm::is_object(key.info.type)) {
        const Bytes* cls = key.main_attrs.find(CKA_CLASS);
        CK_OBJECT_CLASS out = CKO_DATA;
        if (cls != nullptr && cls->size() == sizeof out) {
            std::memcpy(&out, cls->data(), sizeof out);
        }
        return out;
    }
    return hsm::is_secret(key.info.type) ? CKO_SECRET_KEY : CKO_PRIVATE_KEY;
}

void ObjectStore::insert(const std::shared_ptr<KeyObject>& key) {
    const CK_OBJECT_CLASS cls = main_class(*key);
    key->main_handle = handle_for(key->info.ident, cls);
    by_handle_[key->main_handle] = Ref{key, cls, key->main_handle};
    if (cls == CKO_PRIVATE_KEY) {
        key->public_handle = handle_for(key->info.ident, CKO_PUBLIC_KEY);
        by_handle_[key->public_handle] = Ref{key, CKO_PUBLIC_KEY, key->public_handle};
    }
    by_ident_[key->info.ident] = key;
}

void ObjectStore::rename_key(const std::string& ident, const std::string& label, const Bytes& id,
                             const std::optional<hsm::KeyInfo>& stored) {
    change(
        ident,
        [&](KeyObject& fresh) {
            const Bytes label_bytes(label.begin(), label.end());
            for (auto* attrs : {&fresh.main_attrs, &fresh.public_attrs}) {
                if (attrs->find(CKA_LABEL) != nullptr) {
                    attrs->set(CKA_LABEL, label_bytes);
                    attrs->set(CKA_ID, id);
                }
            }
            fresh.info.label = label;
            fresh.info.id = id;
        },
        stored);
}

void ObjectStore::update_plain(const std::string& ident, Attributes attributes,
                               const std::optional<hsm::KeyInfo>& stored) {
    change(
        ident, [&](KeyObject& fresh) { fresh.main_attrs = std::move(attributes); }, stored);
}

void ObjectStore::change(const std::string& ident, const std::function<void(KeyObject&)>& edit,
                         const std::optional<hsm::KeyInfo>& stored) {
    std::lock_guard lock(mutex_);
    auto it = by_ident_.find(ident);
    if (it == by_ident_.end()) {
        return;
    }
    auto fresh = successor(*it->second);
    edit(*fresh);
    replace(it, fresh, stored);
}

std::shared_ptr<KeyObject> ObjectStore::successor(const KeyObject& key) {
    auto fresh = std::make_shared<KeyObject>();
    fresh->info = key.info;
    fresh->slot = key.slot;
    fresh->session = key.session;
    fresh->home_module = key.home_module;
    fresh->creator = key.creator;
    fresh->main_handle = key.main_handle;
    fresh->public_handle = key.public_handle;
    fresh->main_attrs = key.main_attrs;
    fresh->public_attrs = key.public_attrs;
    fresh->main_destroyed = key.main_destroyed;
    fresh->take_state_of(key);
    return fresh;
}

void ObjectStore::replace(std::map<std::string, std::shared_ptr<KeyObject>>::iterator it,
                          const std::shared_ptr<KeyObject>& fresh,
                          const std::optional<hsm::KeyInfo>& stored) {
    if (stored) {
        // The same handles under the identity the world gave it.
        issued_[{stored->ident, main_class(*fresh)}] = fresh->main_handle;
        if (fresh->public_handle != 0) {
            issued_[{stored->ident, CKO_PUBLIC_KEY}] = fresh->public_handle;
        }
        fresh->info.ident = stored->ident;
        fresh->info.persistent = true;
    }
    by_ident_.erase(it);
    by_ident_[fresh->info.ident] = fresh;
    for (auto handle : {fresh->main_handle, fresh->public_handle}) {
        if (auto ref = by_handle_.find(handle); handle != 0 && ref != by_handle_.end()) {
            ref->second.key = fresh;
        }
    }
}

void ObjectStore::sync(const std::vector<hsm::KeyInfo>& world, const SlotOf& slot_of) {
    std::lock_guard lock(mutex_);
    std::set<std::string> present;
    for (const auto& info : world) {
        if (!info.persistent) {
            continue;
        }
        present.insert(info.ident);
        if (by_ident_.count(info.ident) != 0) {
            continue;
        }
        auto slot = slot_of(info);
        if (!slot) {
            continue;
        }
        try {
            insert(make(info, *slot, false));
        } catch (const std::exception& e) {
            logger().warn("key {} ('{}') not shown: {}", info.ident, info.label, e.what());
        }
    }
    for (auto it = by_ident_.begin(); it != by_ident_.end();) {
        const auto& key = it->second;
        if (!key->session && !key->main_destroyed && present.count(it->first) == 0) {
            by_handle_.erase(key->main_handle);
            by_handle_.erase(key->public_handle);
            it = by_ident_.erase(it);
        } else {
            ++it;
        }
    }
}

std::shared_ptr<KeyObject> ObjectStore::add(const hsm::KeyInfo& info, CK_SLOT_ID slot, bool session,
                                            std::uint32_t home_module, CK_SESSION_HANDLE creator) {
    auto key = make(info, slot, session);
    key->home_module = home_module;
    key->creator = creator;
    std::lock_guard lock(mutex_);
    insert(key);
    return key;
}

std::optional<ObjectStore::Ref> ObjectStore::get(CK_OBJECT_HANDLE handle) const {
    std::lock_guard lock(mutex_);
    auto it = by_handle_.find(handle);
    if (it == by_handle_.end() || it->second.key->lost()) {
        return std::nullopt;
    }
    return it->second;
}

std::vector<ObjectStore::Ref> ObjectStore::all() const {
    std::lock_guard lock(mutex_);
    std::vector<Ref> out;
    out.reserve(by_handle_.size());
    for (const auto& [handle, ref] : by_handle_) {
        if (!ref.key->lost()) {
            out.push_back(ref);
        }
    }
    return out;
}

std::vector<std::shared_ptr<KeyObject>> ObjectStore::keys() const {
    std::lock_guard lock(mutex_);
    std::vector<std::shared_ptr<KeyObject>> out;
    for (const auto& [ident, key] : by_ident_) {
        out.push_back(key);
    }
    return out;
}

void ObjectStore::remove(const std::string& ident) {
    std::lock_guard lock(mutex_);
    auto it = by_ident_.find(ident);
    if (it == by_ident_.end()) {
        return;
    }
    by_handle_.erase(it->second->main_handle);
    by_handle_.erase(it->second->public_handle);
    by_ident_.erase(it);
}

bool ObjectStore::main_destroyed(const KeyObject& key) const {
    std::lock_guard lock(mutex_);
    return key.main_destroyed;
}

bool ObjectStore::remove_object(const std::string& ident, CK_OBJECT_CLASS cls) {
    std::lock_guard lock(mutex_);
    auto it = by_ident_.find(ident);
    if (it == by_ident_.end()) {
        return true;
    }
    auto& key = *it->second;
    if (cls == CKO_PUBLIC_KEY) {
        by_handle_.erase(key.public_handle);
    } else {
        by_handle_.erase(key.main_handle);
        key.main_destroyed = true;
    }
    const bool left = by_handle_.count(key.main_handle) != 0 ||
                      (key.public_handle != 0 && by_handle_.count(key.public_handle) != 0);
    if (!left) {
        by_ident_.erase(it);
    }
    return !left;
}

} // namespace preloadrun::pkcs11
