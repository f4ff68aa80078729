#include "object_lifecycle.hpp"

#include "attributes.hpp"
#include "log.hpp"
#include "preloadrun/hsm/rsa_exponent.hpp"

#include <openssl/crypto.h>

namespace preloadrun::pkcs11 {

namespace {

template <class Fn> auto first_of(Template a, Template b, CK_ATTRIBUTE_TYPE type, Fn&& get) {
    auto v = get(a.attrs, a.count, type);
    return v ? v : get(b.attrs, b.count, type);
}

void check_session_may_create(Instance& instance, const Session& session, bool persistent) {
    if (session.slot != kAcceleratorSlot && !instance.slots().logged_in(session.slot)) {
        throw CkError(CKR_USER_NOT_LOGGED_IN, "log in to the token to make keys on it");
    }
    if (persistent && (session.flags & CKF_RW_SESSION) == 0) {
        throw CkError(CKR_SESSION_READ_ONLY, "token objects need a read/write session");
    }
}

std::shared_ptr<KeyObject> make(Instance& instance, Session& session, hsm::KeySpec spec) {
    auto [module, generated] = instance.router().generate(session.slot, spec);
    auto key = instance.objects().add(generated.key, session.slot, !spec.persistent, module,
                                      session.handle);
    key->set_handle(module, generated.handle);
    logger().debug("generated {} key {} ('{}') on module {}", spec.persistent ? "token" : "session",
                   generated.key.ident, spec.label, module);
    return key;
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

} // namespace

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
    check_session_may_create(instance, session, spec.persistent);
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
    spec.persistent = first_of(templ, none, CKA_TOKEN, template_bool).value_or(false);
    auto label = first_of(templ, none, CKA_LABEL, template_bytes);
    spec.label = label ? std::string(label->begin(), label->end()) : std::string();
    spec.id = first_of(templ, none, CKA_ID, template_bytes).value_or(Bytes{});
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
    check_session_may_create(instance, session, spec.persistent);
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
    OPENSSL_cleanse(value->data(), value->size());
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
    spec.persistent = first_of(templ, none, CKA_TOKEN, template_bool).value_or(false);
    auto label = first_of(templ, none, CKA_LABEL, template_bytes);
    spec.label = label ? std::string(label->begin(), label->end()) : std::string();
    spec.id = first_of(templ, none, CKA_ID, template_bytes).value_or(Bytes{});
    check_session_may_create(instance, session, spec.persistent);
    return make(instance, session, std::move(spec))->main_handle;
}

void destroy_object(Instance& instance, Session& session, CK_OBJECT_HANDLE object) {
    const auto ref = instance.objects().get(object);
    if (!ref || !instance.visible(*ref, session.slot)) {
        throw CkError(CKR_OBJECT_HANDLE_INVALID, "no such object");
    }
    auto& key = *ref->key;
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
