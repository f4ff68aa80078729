#include "key_wrap.hpp"

#include "attributes.hpp"
#include "log.hpp"
#include "mechanisms.hpp"
#include "preloadrun/hsm/mechanism_params.hpp"

#include <cstring>

namespace preloadrun::pkcs11 {

namespace {

using hsm::MechanismKind;

// A key of the session's slot, usable now by this session, of one of the
// classes `allowed` says.
std::shared_ptr<KeyObject> usable_key(Instance& instance, const Session& session,
                                      CK_OBJECT_HANDLE handle,
                                      std::initializer_list<CK_OBJECT_CLASS> allowed, CK_RV invalid,
                                      CK_RV not_permitted) {
    const auto ref = instance.objects().get(handle);
    if (!ref || ref->key->slot != session.slot || !instance.visible(*ref, session.slot)) {
        throw CkError(invalid, "no such key in this session's slot");
    }
    if (std::find(allowed.begin(), allowed.end(), ref->cls) == allowed.end() ||
        hsm::is_object(ref->key->info.type)) {
        throw CkError(not_permitted, "this object cannot do that");
    }
    if (instance.objects().main_destroyed(*ref->key)) {
        throw CkError(not_permitted, "the key pair's private key was destroyed");
    }
    if (ref->key->info.token && !instance.slots().logged_in(session.slot)) {
        throw CkError(CKR_USER_NOT_LOGGED_IN, "log in to the token to use its keys");
    }
    return ref->key;
}

// The mechanism for the wrapping (CKF_WRAP) or unwrapping (CKF_UNWRAP) key.
hsm::Mechanism wrap_mechanism(Instance& instance, const CK_MECHANISM& mechanism,
                              const hsm::KeyInfo& key, CK_FLAGS purpose) {
    Prepared prepared;
    try {
        prepared = prepare(mechanism, key, purpose);
    } catch (const CkError& e) {
        if (e.rv() != CKR_KEY_TYPE_INCONSISTENT) {
            throw;
        }
        throw CkError(purpose == CKF_WRAP ? CKR_WRAPPING_KEY_TYPE_INCONSISTENT
                                          : CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
                      e.what());
    }
    if (!instance.offers(prepared.spec->kind)) {
        throw CkError(CKR_MECHANISM_INVALID, "not every module of the fleet offers this mechanism");
    }
    return prepared.mechanism;
}

// What a wrapped key of `size` bytes must be for `kind`, before the HSM sees it.
void check_wrapped_length(MechanismKind kind, std::size_t size) {
    bool ok = size > 0;
    switch (kind) {
    case MechanismKind::aes_key_wrap:
        ok = size >= 24 && size % 8 == 0; // RFC 3394: at least two 64-bit blocks wrapped
        break;
    case MechanismKind::aes_key_wrap_pad:
        ok = size >= 16 && size % 8 == 0;
        break;
    case MechanismKind::aes_ecb:
    case MechanismKind::aes_cbc:
    case MechanismKind::aes_cbc_pad:
        ok = size > 0 && size % hsm::kAesBlock == 0;
        break;
    default:
        break;
    }
    if (!ok) {
        throw CkError(CKR_WRAPPED_KEY_LEN_RANGE,
                      "the wrapped key's length does not fit the mechanism");
    }
}

// The kind of key the template asks for, and its size (0: the key's own).
void unwrapped_kind(Template templ, hsm::KeySpec& spec) {
    const auto cls = template_ulong(templ.attrs, templ.count, CKA_CLASS);
    const auto type = template_ulong(templ.attrs, templ.count, CKA_KEY_TYPE);
    if (!cls || !type) {
        throw CkError(CKR_TEMPLATE_INCOMPLETE, "CKA_CLASS and CKA_KEY_TYPE are needed");
    }
    if (template_bytes(templ.attrs, templ.count, CKA_VALUE)) {
        throw CkError(CKR_TEMPLATE_INCONSISTENT, "an unwrapped key's value is the wrapped key's");
    }
    if (*cls == CKO_SECRET_KEY && (*type == CKK_AES || *type == CKK_GENERIC_SECRET)) {
        const bool aes = *type == CKK_AES;
        spec.type = aes ? hsm::KeyType::aes : hsm::KeyType::generic_secret;
        if (auto len = template_ulong(templ.attrs, templ.count, CKA_VALUE_LEN)) {
            if (aes ? (*len != 16 && *len != 24 && *len != 32) : (*len == 0 || *len > 512)) {
                throw CkError(CKR_ATTRIBUTE_VALUE_INVALID,
                              aes ? "AES keys are 16, 24 or 32 bytes"
                                  : "generic secret keys are 1 to 512 bytes");
            }
            spec.bits = static_cast<std::uint32_t>(*len * 8);
        }
        return;
    }
    if (*cls == CKO_PRIVATE_KEY && (*type == CKK_RSA || *type == CKK_EC)) {
        // Its size (and an EC key's curve) is the key's own.
        spec.type = *type == CKK_RSA ? hsm::KeyType::rsa : hsm::KeyType::ec_p256;
        return;
    }
    throw CkError(CKR_TEMPLATE_INCONSISTENT, "an unwrapped key is an AES or generic secret key, or "
                                             "an RSA or EC private key");
}

} // namespace

void wrap_key(Instance& instance, Session& session, const CK_MECHANISM& mechanism,
              CK_OBJECT_HANDLE wrapping_key, CK_OBJECT_HANDLE key, CK_BYTE_PTR out,
              CK_ULONG_PTR out_length) {
    require_arg(out_length, "wrapped key length pointer");
    instance.before_operation_init();
    auto wrapping = usable_key(instance, session, wrapping_key, {CKO_SECRET_KEY, CKO_PUBLIC_KEY},
                               CKR_WRAPPING_KEY_HANDLE_INVALID, CKR_KEY_FUNCTION_NOT_PERMITTED);
    auto target = usable_key(instance, session, key, {CKO_SECRET_KEY, CKO_PRIVATE_KEY},
                             CKR_KEY_HANDLE_INVALID, CKR_KEY_NOT_WRAPPABLE);
    const auto mech = wrap_mechanism(instance, mechanism, wrapping->info, CKF_WRAP);
    if (!target->info.extractable) {
        throw CkError(CKR_KEY_UNEXTRACTABLE, "the key was made with CKA_EXTRACTABLE false: it "
                                             "never leaves the HSMs");
    }
    const bool secret = hsm::is_secret(target->info.type);
    if (hsm::is_rsa_encryption(mech.kind) && !secret) {
        throw CkError(CKR_KEY_NOT_WRAPPABLE, "RSA wraps secret keys only");
    }
    if ((mech.kind == MechanismKind::aes_ecb || mech.kind == MechanismKind::aes_cbc) &&
        (!secret || target->info.bits / 8 % hsm::kAesBlock != 0)) {
        throw CkError(CKR_KEY_SIZE_RANGE, "AES-ECB and -CBC wrap whole 16-byte blocks: a secret "
                                          "key of 16 or 32 bytes");
    }
    Bytes wrapped;
    try {
        wrapped = instance.router().run_with(
            *target, wrapping.get(),
            [&](hsm::Service& service, std::uint32_t m, hsm::ObjectHandle k, hsm::ObjectHandle w) {
                return service.wrap_key(m, w, mech, k);
            });
    } catch (const Error& e) {
        switch (e.code()) {
        case ErrorCode::permission:
            throw CkError(CKR_KEY_UNEXTRACTABLE, e.what());
        case ErrorCode::usage:
        case ErrorCode::crypto:
            throw CkError(CKR_KEY_SIZE_RANGE, e.what());
        default:
            throw;
        }
    }
    logger().debug("wrapped key {} under key {}", target->info.ident, wrapping->info.ident);
    if (out == nullptr) {
        *out_length = wrapped.size();
        return;
    }
    if (*out_length < wrapped.size()) {
        *out_length = wrapped.size();
        throw CkError(CKR_BUFFER_TOO_SMALL, "wrapped key buffer too small");
    }
    std::memcpy(out, wrapped.data(), wrapped.size());
    *out_length = wrapped.size();
}

CK_OBJECT_HANDLE unwrap_key(Instance& instance, Session& session, const CK_MECHANISM& mechanism,
                            CK_OBJECT_HANDLE unwrapping_key, std::span<const std::uint8_t> wrapped,
                            Template templ) {
    if (templ.count > 0) {
        require_arg(templ.attrs, "template");
    }
    instance.before_operation_init();
    auto unwrapping =
        usable_key(instance, session, unwrapping_key, {CKO_SECRET_KEY, CKO_PRIVATE_KEY},
                   CKR_UNWRAPPING_KEY_HANDLE_INVALID, CKR_KEY_FUNCTION_NOT_PERMITTED);
    const auto mech = wrap_mechanism(instance, mechanism, unwrapping->info, CKF_UNWRAP);
    hsm::KeySpec spec;
    unwrapped_kind(templ, spec);
    take_key_names(templ, spec);
    check_session_may_create(instance, session, spec.persistent, spec.extractable);
    check_wrapped_length(mech.kind, wrapped.size());
    spec.unwrap_mechanism = mech;
    spec.value = SecureBuffer(wrapped.data(), wrapped.size());
    std::pair<std::uint32_t, hsm::GeneratedKey> made;
    try {
        made = make_from(instance, session, *unwrapping, spec, &hsm::KeySpec::unwrap_with);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::crypto || e.code() == ErrorCode::usage) {
            throw CkError(CKR_WRAPPED_KEY_INVALID, e.what());
        }
        throw;
    }
    logger().debug("unwrapped key {} under key {}", made.second.key.ident, unwrapping->info.ident);
    return adopt_key(instance, session, made.first, made.second)->main_handle;
}

} // namespace preloadrun::pkcs11
