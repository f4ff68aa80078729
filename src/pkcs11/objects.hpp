#pragma once
// Objects: stable CK_OBJECT_HANDLEs that name key identities (the world's
// ident for persistent keys, the session key's ident for session objects),
// never per-module handles. A key pair is two objects (private and public)
// of one KeyObject, destroyed one at a time; a secret key is one secret-key object; a plain
// object (data, certificate, public key on its own: hsm::KeyType::object)
// is one object of its class, on no HSM. Each KeyObject remembers on which
// modules it is loaded, under which handle.

#include "attributes.hpp"
#include "ck.hpp"
#include "preloadrun/hsm/types.hpp"

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace preloadrun::pkcs11 {

struct KeyObject {
    hsm::KeyInfo info;
    CK_SLOT_ID slot = 0;
    bool session = false;               // a session key (CKA_TOKEN false): never reloaded
    std::uint32_t home_module = 0;      // session keys: the one module that holds it
    CK_SESSION_HANDLE creator = 0;      // session keys: destroyed when this session closes
    CK_OBJECT_HANDLE main_handle = 0;   // the private or secret key object
    CK_OBJECT_HANDLE public_handle = 0; // 0 for secret keys
    Attributes main_attrs;
    Attributes public_attrs;
    // The private (or secret) key object was destroyed while its public
    // half stays: the key is gone from the world, the object stays until it
    // is destroyed or its process ends. Guarded by the ObjectStore.
    bool main_destroyed = false;

    // The key's handle on `module`, if loaded there.
    std::optional<hsm::ObjectHandle> handle_on(std::uint32_t module) const;
    void set_handle(std::uint32_t module, hsm::ObjectHandle handle);
    // Forgets its handle on `module`, and that the module refused it.
    void forget(std::uint32_t module);
    // `module` said it has no such key (a module of the group that does not
    // hold it, or holds a different key under its id): it is not used for
    // the key until it is forgotten (the module was reset or left).
    void refuse(std::uint32_t module);
    bool refused_on(std::uint32_t module) const;
    bool refused_anywhere() const;
    // Loaded on some module at some time since this process found it: a key
    // the application uses, which a reload brings back on every module
    // (even after every module was cleared at once).
    bool in_use() const;
    // The loaded handles, refusals and loss of `other` (a successor's start).
    void take_state_of(const KeyObject& other);
    // A session key whose module was cleared: gone for good.
    void mark_lost();
    bool lost() const;

private:
    mutable std::mutex mutex_;
    std::map<std::uint32_t, hsm::ObjectHandle> loaded_;
    std::set<std::uint32_t> refused_;
    bool lost_ = false;
    bool in_use_ = false;
};

class ObjectStore {
public:
    struct Ref {
        std::shared_ptr<KeyObject> key;
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_OBJECT_HANDLE handle = 0;
        // The public half of a key pair (not a public key object on its own).
        bool public_half() const {
            return cls == CKO_PUBLIC_KEY && !hsm::is_object(key->info.type);
        }
        const Attributes& attributes() const {
            return public_half() ? key->public_attrs : key->main_attrs;
        }
    };
    using SlotOf = std::function<std::optional<CK_SLOT_ID>(const hsm::KeyInfo&)>;

    // Brings the persistent objects in line with the world's key list: adds
    // new keys (slot_of decides the slot; nullopt: not shown), drops keys
    // that are gone. Session objects are untouched.
    void sync(const std::vector<hsm::KeyInfo>& world, const SlotOf& slot_of);

    // Adds one key (a generated one). `session`: CKA_TOKEN false, living on
    // `home_module` only.
    std::shared_ptr<KeyObject> add(const hsm::KeyInfo& info, CK_SLOT_ID slot, bool session,
                                   std::uint32_t home_module, CK_SESSION_HANDLE creator);

    std::optional<Ref> get(CK_OBJECT_HANDLE handle) const;
    std::vector<Ref> all() const;
    std::vector<std::shared_ptr<KeyObject>> keys() const;
    void remove(const std::string& ident);
    // Destroys one object of a key: the public half of a pair
    // (CKO_PUBLIC_KEY), or the private or secret key. The two halves of a
    // pair are separate objects; the key goes once neither is left. True
    // when nothing of the key is left.
    bool remove_object(const std::string& ident, CK_OBJECT_CLASS cls);
    bool main_destroyed(const KeyObject& key) const;
    // A plain object (hsm::KeyType::object) whose attributes changed: its
    // new attributes, and for a token object the identity the world gave
    // the new content (the object handle stays the same).
    void update_plain(const std::string& ident, Attributes attributes,
                      const std::optional<hsm::KeyInfo>& stored);
    // A key's new CKA_LABEL and CKA_ID, and for a token key the identity of
    // the copy that now holds them (its object handles stay the same).
    void rename_key(const std::string& ident, const std::string& label, const Bytes& id,
                    const std::optional<hsm::KeyInfo>& stored);

private:
    std::shared_ptr<KeyObject> make(const hsm::KeyInfo& info, CK_SLOT_ID slot, bool session);
    static CK_OBJECT_CLASS main_class(const KeyObject& key);
    // Changes are made to a successor of the object that takes its place
    // (and, with `stored`, the identity the world gave it, its handles
    // kept): a caller still holding the old one sees it unchanged.
    static std::shared_ptr<KeyObject> successor(const KeyObject& key);
    // `edit` made to a successor of the object `ident`, which replaces it.
    void change(const std::string& ident, const std::function<void(KeyObject&)>& edit,
                const std::optional<hsm::KeyInfo>& stored);
    void replace(std::map<std::string, std::shared_ptr<KeyObject>>::iterator it,
                 const std::shared_ptr<KeyObject>& fresh,
                 const std::optional<hsm::KeyInfo>& stored);
    CK_OBJECT_HANDLE handle_for(const std::string& ident, CK_OBJECT_CLASS cls);
    void insert(const std::shared_ptr<KeyObject>& key);

    mutable std::mutex mutex_;
    std::map<std::string, std::shared_ptr<KeyObject>> by_ident_;
    std::map<CK_OBJECT_HANDLE, Ref> by_handle_;
    // Handles stay the same for an identity for the life of the process.
    std::map<std::pair<std::string, CK_OBJECT_CLASS>, CK_OBJECT_HANDLE> issued_;
    CK_OBJECT_HANDLE next_ = 1;
};

} // namespace preloadrun::pkcs11
