#include "object_lifecycle.hpp"

#include "attributes.hpp"
#include "crypto_ops.hpp"
#include "log.hpp"
#include "plain_objects.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/rsa_exponent.hpp"

#include <atomic>

namespace preloadrun::pkcs11 {

namespace {

template <class Fn> auto first_of(Template a, Template b, CK_ATTRIBUTE_TYPE type, Fn&& get) {
    auto v = get(a.attrs, a.count, type);
    return v ? v : get(b.attrs, b.count, type);
}

std::shared_ptr<KeyObject> make(Instance& instance, Session& session, hsm::KeySpec spec) {
    auto [module, generated] = instance.router().generate(session.slot, spec);
    return adopt_key(instance, session, module, generated);
}

// Removes a token (persistent) key from the world. A token's key needs the
// token: a logged-in session of its slot, and the token's handle, which the
// service checks against the caller. Whatever is visible without login (the
// public half) is never a way to the private half.
void destroy_in_world(Instance& instance, const Session& session, const KeyObject& key) {
    if (key.info.token && !instance.slots().logged_in(session.slot)) {
        throw CkError(CKR_USER_NOT_LOGGED_IN, "log in to the token to destroy its keys");
    }
    if ((session.flags & CKF_RW_SESSION) == 0) {
        throw CkError(CKR_SESSION_READ_ONLY, "token objects need a read/write session");
    }
    try {
        if (key.info.token) {
            instance.router().destroy(key);
        } else {
            auto lease = instance.pool().acquire();
            lease->destroy_key(key.info.ident, 0, 0);
        }
    } catch (const Error& e) {
        if (e.code() == ErrorCode::permission) {
            throw CkError(CKR_ACTION_PROHIBITED, e.what());
        }
        throw;
    }
}

bool attr_true(const Attributes& a, CK_ATTRIBUTE_TYPE type) {
    const Bytes* v = a.find(type);
    return v != nullptr && v->size() == 1 && (*v)[0] != CK_FALSE;
}

std::string attr_text(const Attributes& a, CK_ATTRIBUTE_TYPE type) {
    const Bytes* v = a.find(type);
    return v == nullptr ? std::string() : std::string(v->begin(), v->end());
}

// A plain object's content stored in the world under the session's token
// (or the modules): returns what the world lists for it.
hsm::KeyInfo store_plain(Instance& instance, Session& session, const Attributes& attrs) {
    Bytes content = attrs.encode();
    if (content.size() > kMaxObjectContent) {
        throw CkError(CKR_DEVICE_MEMORY, "an object of more than " +
                                             std::to_string(kMaxObjectContent) +
                                             " bytes cannot be kept on the token");
    }
    hsm::KeySpec spec;
    spec.type = hsm::KeyType::object;
    spec.persistent = true;
    spec.label = attr_text(attrs, CKA_LABEL);
    const Bytes* id = attrs.find(CKA_ID);
    spec.id = id != nullptr ? *id : Bytes{};
    spec.value = SecureBuffer(content.data(), content.size());
    auto [module, stored] = instance.router().generate(session.slot, spec);
    try {
        // The service keeps it loaded for this process: it needs no HSM.
        auto lease = instance.pool().acquire();
        lease->unload(module, stored.handle);
    } catch (const std::exception& e) {
        logger().debug("object {} left loaded on module {}: {}", stored.key.ident, module,
                       e.what());
    }
    return stored.key;
}

CK_OBJECT_HANDLE create_plain(Instance& instance, Session& session, Attributes attrs) {
    const bool token = attr_true(attrs, CKA_TOKEN);
    if (token && attr_true(attrs, CKA_PRIVATE)) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID,
                      "token objects other than keys are public (CKA_PRIVATE false): the world "
                      "lists them to every process");
    }
    check_session_may_create(instance, session, token);
    hsm::KeyInfo info;
    if (token) {
        info = store_plain(instance, session, attrs);
    } else {
        static std::atomic<std::uint64_t> made{0};
        info.ident = "session-object-" + std::to_string(++made);
        info.type = hsm::KeyType::object;
        info.label = attr_text(attrs, CKA_LABEL);
        info.persistent = false;
        info.public_der = attrs.encode();
    }
    auto object = instance.objects().add(info, session.slot, !token, 0, session.handle);
    logger().debug("created {} object {} ('{}')", token ? "token" : "session", info.ident,
                   info.label);
    return object->main_handle;
}

} // namespace

void take_key_names(Template templ, hsm::KeySpec& spec) {
    const Template none{nullptr, 0};
    spec.persistent = first_of(templ, none, CKA_TOKEN, template_bool).value_or(false);
    auto label = first_of(templ, none, CKA_LABEL, template_bytes);
    spec.label = label ? std::string(label->begin(), label->end()) : std::string();
    spec.id = first_of(templ, none, CKA_ID, template_bytes).value_or(Bytes{});
    spec.extractable = first_of(templ, none, CKA_EXTRACTABLE, template_bool).value_or(false);
}

void check_session_may_create(Instance& instance, const Session& session, bool persistent,
                              bool extractable) {
    if (session.slot != kAcceleratorSlot && !instance.slots().logged_in(session.slot)) {
        throw CkError(CKR_USER_NOT_LOGGED_IN, "log in to the token to make keys on it");
    }
    if (extractable && persistent && session.slot == kAcceleratorSlot) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID,
                      "a token key of the accelerator slot is protected by the modules, which "
                      "every user of the HSM service may use: it cannot be extractable");
    }
    if (persistent && (session.flags & CKF_RW_SESSION) == 0) {
        throw CkError(CKR_SESSION_READ_ONLY, "token objects need a read/write session");
    }
}

std::shared_ptr<KeyObject> adopt_key(Instance& instance, Session& session, std::uint32_t module,
                                     const hsm::GeneratedKey& made) {
    const bool persistent = made.key.persistent;
    auto key = instance.objects().add(made.key, session.slot, !persistent, module, session.handle);
    key->set_handle(module, made.handle);
    logger().debug("made {} key {} ('{}') on module {}", persistent ? "token" : "session",
                   made.key.ident, made.key.label, module);
    return key;
}

std::pair<CK_OBJECT_HANDLE, CK_OBJECT_HANDLE> generate_key_pair(Instance& instance,
                                                                Session& session,
                                                                const CK_MECHANISM& mechanism,
                                                                Template pub, Template priv) {
    if (pub.count > 0) {
        require_arg(pub.attrs, "public key template");
    }
    if (priv.count > 0) {
        require_arg(priv.attrs, "private key template");
    }
    hsm::KeySpec spec;
    spec.persistent = first_of(priv, pub, CKA_TOKEN, template_bool).value_or(false);
    spec.label = [&] {
        auto label = first_of(priv, pub, CKA_LABEL, template_bytes);
        return label ? std::string(label->begin(), label->end()) : std::string();
    }();
    spec.id = first_of(priv, pub, CKA_ID, template_bytes).value_or(Bytes{});
    spec.extractable = template_bool(priv.attrs, priv.count, CKA_EXTRACTABLE).value_or(false);
    switch (mechanism.mechanism) {
    case CKM_RSA_PKCS_KEY_PAIR_GEN: {
        const auto bits = first_of(pub, priv, CKA_MODULUS_BITS, template_ulong);
        if (!bits) {
            throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_MODULUS_BITS is needed");
        }
        if (*bits < 1024 || *bits > 4096) {
            throw CkError(CKR_KEY_SIZE_RANGE, "RSA keys are 1024 to 4096 bits");
        }
        if (auto e = first_of(pub, priv, CKA_PUBLIC_EXPONENT, template_bytes)) {
            auto exponent = hsm::rsa_public_exponent(*e);
            if (!exponent.problem.empty()) {
                throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, exponent.problem);
            }
            if (exponent.value != Bytes{0x01, 0x00, 0x01}) {
                spec.public_exponent = std::move(exponent.value);
            }
        }
        spec.type = hsm::KeyType::rsa;
        spec.bits = static_cast<std::uint32_t>(*bits);
        break;
    }
    case CKM_EC_KEY_PAIR_GEN: {
        const auto params = first_of(pub, priv, CKA_EC_PARAMS, template_bytes);
        if (!params) {
            throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_EC_PARAMS is needed");
        }
        const auto curve = curve_from_params(*params);
        if (!curve) {
            throw CkError(CKR_CURVE_NOT_SUPPORTED, "only P-256 and P-384 are supported");
        }
        spec.type = *curve;
        break;
    }
    default:
        throw CkError(CKR_MECHANISM_INVALID, "not a key pair generation mechanism");
    }
    check_session_may_create(instance, session, spec.persistent, spec.extractable);
    auto key = make(instance, session, spec);
    return {key->public_handle, key->main_handle};
}

CK_OBJECT_HANDLE generate_secret_key(Instance& instance, Session& session,
                                     const CK_MECHANISM& mechanism, Template templ) {
    if (templ.count > 0) {
        require_arg(templ.attrs, "template");
    }
    const bool aes = mechanism.mechanism == CKM_AES_KEY_GEN;
    if (!aes && mechanism.mechanism != CKM_GENERIC_SECRET_KEY_GEN) {
        throw CkError(CKR_MECHANISM_INVALID, "CKM_AES_KEY_GEN or CKM_GENERIC_SECRET_KEY_GEN");
    }
    const Template none{nullptr, 0};
    hsm::KeySpec spec;
    spec.type = aes ? hsm::KeyType::aes : hsm::KeyType::generic_secret;
    if (auto type = first_of(templ, none, CKA_KEY_TYPE, template_ulong);
        type && *type != ck_key_type(spec.type)) {
        throw CkError(CKR_TEMPLATE_INCONSISTENT, "CKA_KEY_TYPE does not fit the mechanism");
    }
    if (auto cls = first_of(templ, none, CKA_CLASS, template_ulong);
        cls && *cls != CKO_SECRET_KEY) {
        throw CkError(CKR_TEMPLATE_INCONSISTENT, "a generated key is CKO_SECRET_KEY");
    }
    take_key_names(templ, spec);
    const auto len = first_of(templ, none, CKA_VALUE_LEN, template_ulong);
    if (!len) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE_LEN is needed");
    }
    if (aes && *len != 16 && *len != 24 && *len != 32) {
        throw CkError(CKR_KEY_SIZE_RANGE, "AES keys are 16, 24 or 32 bytes");
    }
    if (!aes && (*len == 0 || *len > 512)) {
        throw CkError(CKR_KEY_SIZE_RANGE, "generic secret keys are 1 to 512 bytes");
    }
    spec.bits = static_cast<std::uint32_t>(*len * 8);
    check_session_may_create(instance, session, spec.persistent, spec.extractable);
    return make(instance, session, spec)->main_handle;
}

CK_OBJECT_HANDLE create_object(Instance& instance, Session& session, Template templ) {
    if (templ.count == 0) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is needed");
    }
    require_arg(templ.attrs, "template");
    const Template none{nullptr, 0};
    const auto cls = first_of(templ, none, CKA_CLASS, template_ulong);
    if (!cls) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS is needed");
    }
    if (is_plain_class(*cls)) {
        return create_plain(instance, session,
                            plain_object_attributes(templ.attrs, templ.count, *cls));
    }
    if (*cls == CKO_PRIVATE_KEY) {
        hsm::KeySpec spec;
        spec.value = private_key_pkcs8(templ.attrs, templ.count, spec.type, spec.bits);
        take_key_names(templ, spec);
        check_session_may_create(instance, session, spec.persistent, spec.extractable);
        return make(instance, session, std::move(spec))->main_handle;
    }
    if (*cls != CKO_SECRET_KEY) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID,
                      "objects of this class cannot be created on this token");
    }
    const auto type = first_of(templ, none, CKA_KEY_TYPE, template_ulong);
    if (!type) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_KEY_TYPE is needed");
    }
    const bool aes = *type == CKK_AES;
    if (!aes && *type != CKK_GENERIC_SECRET) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "secret keys are CKK_AES or CKK_GENERIC_SECRET");
    }
    auto value = first_of(templ, none, CKA_VALUE, template_bytes);
    if (!value) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_VALUE is needed");
    }
    hsm::KeySpec spec;
    spec.value = SecureBuffer(value->data(), value->size());
    secure_wipe(value->data(), value->size());
    const std::size_t size = spec.value.size();
    if (auto len = first_of(templ, none, CKA_VALUE_LEN, template_ulong); len && *len != size) {
        throw CkError(CKR_TEMPLATE_INCONSISTENT, "CKA_VALUE_LEN differs from CKA_VALUE's length");
    }
    if (aes ? (size != 16 && size != 24 && size != 32) : (size == 0 || size > 512)) {
        throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, aes ? "AES keys are 16, 24 or 32 bytes"
                                                       : "generic secret keys are 1 to 512 bytes");
    }
    spec.type = aes ? hsm::KeyType::aes : hsm::KeyType::generic_secret;
    spec.bits = static_cast<std::uint32_t>(size * 8);
    take_key_names(templ, spec);
    check_session_may_create(instance, session, spec.persistent, spec.extractable);
    return make(instance, session, std::move(spec))->main_handle;
}

std::pair<std::uint32_t, hsm::GeneratedKey> make_from(Instance& instance, Session& session,
                                                      KeyObject& source, const hsm::KeySpec& spec,
                                                      hsm::ObjectHandle hsm::KeySpec::*from) {
    std::uint32_t used = 0;
    hsm::GeneratedKey made;
    auto& router = instance.router();
    router.run_with(
        source, nullptr,
        [&](hsm::Service& service, std::uint32_t m, hsm::ObjectHandle h, hsm::ObjectHandle) {
            hsm::KeySpec s = spec;
            s.*from = h;
            s.token_handle = router.token_handle(session.slot, m);
            made = service.generate_key(m, s);
            used = m;
            return Bytes{};
        },
        spec.persistent ? std::nullopt : router.session_home(session.slot));
    if (!spec.persistent) {
        router.set_session_home(session.slot, used);
    }
    return {used, std::move(made)};
}

namespace {

// C_SetAttributeValue on a key: CKA_LABEL and CKA_ID. A session key's
// change stays in the process; a token key's is made in the world by a copy
// of the key under the new names, the old one then destroyed (the object
// handles stay the same).
void rename_key(Instance& instance, Session& session, const ObjectStore::Ref& ref, Template templ) {
    auto& key = *ref.key;
    std::string label = key.info.label;
    Bytes id = key.info.id;
    for (CK_ULONG i = 0; i < templ.count; ++i) {
        const auto& a = templ.attrs[i];
        if (a.ulValueLen != 0 && a.pValue == nullptr) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "template attribute without a value");
        }
        const auto* p = static_cast<const std::uint8_t*>(a.pValue);
        const Bytes value = p == nullptr ? Bytes{} : Bytes(p, p + a.ulValueLen);
        if (a.type == CKA_LABEL) {
            label.assign(value.begin(), value.end());
        } else if (a.type == CKA_ID) {
            id = value;
        } else if (!ref.attributes().matches(&a, 1)) {
            throw CkError(CKR_ATTRIBUTE_READ_ONLY, "of a key, only CKA_LABEL and CKA_ID change");
        }
    }
    if (key.session) {
        instance.objects().rename_key(key.info.ident, label, id, std::nullopt);
        return;
    }
    check_session_may_create(instance, session, true);
    const std::string old_ident = key.info.ident;
    hsm::KeySpec spec;
    spec.persistent = true;
    spec.label = label;
    spec.id = id;
    auto [used, copied] = make_from(instance, session, key, spec, &hsm::KeySpec::copy_of);
    // The old key leaves the world (and every module); the copy is the key.
    destroy_in_world(instance, session, key);
    for (const auto& rec : instance.group().records()) {
        key.forget(rec.number);
    }
    key.set_handle(used, copied.handle); // taken over by the renamed successor
    instance.objects().rename_key(key.info.ident, label, id, copied.key);
    logger().debug("key {} is now {} ('{}')", old_ident, copied.key.ident, label);
}

// A copy of a key on the HSMs (private or secret): the HSM service copies
// the loaded key, under the same token, as a token or a session key.
CK_OBJECT_HANDLE copy_key(Instance& instance, Session& session, const ObjectStore::Ref& ref,
                          Template templ) {
    const Template none{nullptr, 0};
    auto& source = *ref.key;
    hsm::KeySpec spec;
    spec.persistent = first_of(templ, none, CKA_TOKEN, template_bool).value_or(!source.session);
    auto label = first_of(templ, none, CKA_LABEL, template_bytes);
    spec.label = label ? std::string(label->begin(), label->end()) : source.info.label;
    spec.id = first_of(templ, none, CKA_ID, template_bytes).value_or(source.info.id);
    for (CK_ULONG i = 0; i < templ.count; ++i) {
        const auto type = templ.attrs[i].type;
        if (type == CKA_TOKEN || type == CKA_LABEL || type == CKA_ID) {
            continue;
        }
        // Anything else may be asked only as it is.
        if (!ref.attributes().matches(&templ.attrs[i], 1)) {
            throw CkError(CKR_ATTRIBUTE_READ_ONLY,
                          "a copy of a key may change CKA_TOKEN, CKA_LABEL and CKA_ID only");
        }
    }
    check_session_may_create(instance, session, spec.persistent, source.info.extractable);
    auto [used, copied] = make_from(instance, session, source, spec, &hsm::KeySpec::copy_of);
    auto key = adopt_key(instance, session, used, copied);
    logger().debug("copied key {} to key {}", source.info.ident, copied.key.ident);
    return ref.cls == CKO_PUBLIC_KEY ? key->public_handle : key->main_handle;
}

} // namespace

CK_OBJECT_HANDLE copy_object(Instance& instance, Session& session, CK_OBJECT_HANDLE object,
                             Template templ) {
    if (templ.count > 0) {
        require_arg(templ.attrs, "template");
    }
    const auto ref = instance.objects().get(object);
    if (!ref || !instance.visible(*ref, session.slot)) {
        throw CkError(CKR_OBJECT_HANDLE_INVALID, "no such object");
    }
    const Attributes& from = ref->attributes();
    if (const Bytes* copyable = from.find(CKA_COPYABLE);
        copyable != nullptr && copyable->size() == 1 && (*copyable)[0] == CK_FALSE &&
        hsm::is_object(ref->key->info.type)) {
        throw CkError(CKR_ACTION_PROHIBITED, "the object is not copyable (CKA_COPYABLE)");
    }
    if (!hsm::is_object(ref->key->info.type) && !ref->public_half()) {
        return copy_key(instance, session, *ref, templ);
    }
    // A plain object, or the public half of a key pair (the copy is a public
    // key object on its own).
    Attributes copy = from;
    for (CK_ULONG i = 0; i < templ.count; ++i) {
        const auto& a = templ.attrs[i];
        const bool flag = a.type == CKA_TOKEN || a.type == CKA_PRIVATE ||
                          a.type == CKA_MODIFIABLE || a.type == CKA_DESTROYABLE ||
                          a.type == CKA_COPYABLE;
        if (!flag && !plain_attribute_modifiable(ref->cls, a.type)) {
            throw CkError(CKR_ATTRIBUTE_READ_ONLY, "this attribute cannot be changed by a copy");
        }
        if (a.ulValueLen != 0 && a.pValue == nullptr) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "template attribute without a value");
        }
        const auto* p = static_cast<const std::uint8_t*>(a.pValue);
        copy.set(a.type, p == nullptr ? Bytes{} : Bytes(p, p + a.ulValueLen));
    }
    if (ref->public_half()) {
        copy.set_bool(CKA_LOCAL, false);
    }
    return create_plain(instance, session, std::move(copy));
}

void set_attributes(Instance& instance, Session& session, CK_OBJECT_HANDLE object, Template templ) {
    if (templ.count > 0) {
        require_arg(templ.attrs, "template");
    }
    const auto ref = instance.objects().get(object);
    if (!ref || !instance.visible(*ref, session.slot)) {
        throw CkError(CKR_OBJECT_HANDLE_INVALID, "no such object");
    }
    auto& key = *ref->key;
    if (!hsm::is_object(key.info.type)) {
        if (instance.objects().main_destroyed(key)) {
            throw CkError(CKR_ACTION_PROHIBITED, "the key of this public key object is gone");
        }
        rename_key(instance, session, *ref, templ);
        return;
    }
    if (!attr_true(key.main_attrs, CKA_MODIFIABLE)) {
        throw CkError(CKR_ACTION_PROHIBITED, "the object is not modifiable (CKA_MODIFIABLE)");
    }
    Attributes changed = key.main_attrs;
    for (CK_ULONG i = 0; i < templ.count; ++i) {
        const auto& a = templ.attrs[i];
        if (!plain_attribute_modifiable(ref->cls, a.type)) {
            throw CkError(CKR_ATTRIBUTE_READ_ONLY, "this attribute cannot be changed");
        }
        if (a.ulValueLen != 0 && a.pValue == nullptr) {
            throw CkError(CKR_ATTRIBUTE_VALUE_INVALID, "template attribute without a value");
        }
        const auto* p = static_cast<const std::uint8_t*>(a.pValue);
        changed.set(a.type, p == nullptr ? Bytes{} : Bytes(p, p + a.ulValueLen));
    }
    if (key.session) {
        instance.objects().update_plain(key.info.ident, std::move(changed), std::nullopt);
        return;
    }
    check_session_may_create(instance, session, true);
    // The new content first, then the old one goes: a failure leaves the
    // object as it was (or, at worst, both).
    Attributes stored_attrs = changed;
    stored_attrs.set_bool(CKA_TOKEN, true);
    const auto stored = store_plain(instance, session, stored_attrs);
    destroy_in_world(instance, session, key);
    instance.objects().update_plain(key.info.ident, std::move(changed), stored);
}

void destroy_object(Instance& instance, Session& session, CK_OBJECT_HANDLE object) {
    const auto ref = instance.objects().get(object);
    if (!ref || !instance.visible(*ref, session.slot)) {
        throw CkError(CKR_OBJECT_HANDLE_INVALID, "no such object");
    }
    auto& key = *ref->key;
    if (hsm::is_object(key.info.type)) {
        if (!attr_true(key.main_attrs, CKA_DESTROYABLE)) {
            throw CkError(CKR_ACTION_PROHIBITED, "the object is not destroyable");
        }
        if (!key.session) {
            destroy_in_world(instance, session, key);
        }
        instance.objects().remove(key.info.ident);
        return;
    }
    if (ref->cls == CKO_PUBLIC_KEY) {
        // The public half only: the private key is an object of its own and
        // stays. The HSMs hold a pair as one key, so the public half of a
        // token key is gone from this process only (others still see it);
        // it takes what destroying the pair takes (a logged-in read/write
        // session), so that no one else's token loses anything it shows.
        if (!key.session) {
            if (key.info.token && !instance.slots().logged_in(session.slot)) {
                throw CkError(CKR_USER_NOT_LOGGED_IN, "log in to the token to destroy its keys");
            }
            if ((session.flags & CKF_RW_SESSION) == 0) {
                throw CkError(CKR_SESSION_READ_ONLY, "token objects need a read/write session");
            }
        }
        instance.objects().remove_object(key.info.ident, CKO_PUBLIC_KEY);
        return;
    }
    if (!key.session) {
        destroy_in_world(instance, session, key);
    }
    // The key leaves every module; its public half, if not destroyed, stays
    // an object of this process.
    for (const auto& rec : instance.group().records()) {
        if (auto handle = key.handle_on(rec.number)) {
            try {
                auto lease = instance.pool().acquire();
                lease->unload(rec.number, *handle);
            } catch (const std::exception& e) {
                logger().debug("key {} not unloaded from module {}: {}", key.info.ident, rec.number,
                               e.what());
            }
            key.forget(rec.number);
        }
    }
    instance.objects().remove_object(key.info.ident, ref->cls);
}

} // namespace preloadrun::pkcs11
