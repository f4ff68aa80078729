// The C_* entry points and the function list. Each entry point is a noexcept
// barrier: guard() runs its body and maps whatever it throws to a CK_RV. The
// per-call preconditions (initialised? valid session? its lock) are in
// with_session(). Only C_GetFunctionList is exported (pkcs11.map).

#include "pkcs11/ck.hpp"
#include "pkcs11/crypto_ops.hpp"
#include "pkcs11/guard.hpp"
#include "pkcs11/keygen.hpp"
#include "pkcs11/lifecycle.hpp"
#include "pkcs11/log.hpp"
#include "pkcs11/mechanisms.hpp"
#include "preloadrun/version.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <span>
#include <string>

namespace preloadrun::pkcs11 {

namespace {

// The preconditions of every call on a session, in one place: initialised,
// valid session, its lock held for the whole call.
struct SessionCall {
    std::shared_ptr<Instance> instance;
    std::shared_ptr<Session> session;
    std::unique_lock<std::mutex> lock;
};

SessionCall with_session(CK_SESSION_HANDLE handle) {
    auto instance = current();
    auto session = instance->sessions().get(handle);
    std::unique_lock lock(session->mutex);
    return {std::move(instance), std::move(session), std::move(lock)};
}

template <std::size_t N> void pad(unsigned char (&field)[N], std::string_view text) {
    std::memset(field, ' ', N);
    std::memcpy(field, text.data(), std::min(N, text.size()));
}

std::span<const std::uint8_t> in(CK_BYTE_PTR data, CK_ULONG len) {
    if (len == 0) {
        return {};
    }
    return {require_arg(data, "data"), len};
}

CK_RV not_supported() {
    current(); // still CKR_CRYPTOKI_NOT_INITIALIZED first
    return CKR_FUNCTION_NOT_SUPPORTED;
}

// Writes a list with the two-call convention.
template <class T> CK_RV list_out(const std::vector<T>& items, T* out, CK_ULONG_PTR count) {
    require_arg(count, "count pointer");
    if (out == nullptr) {
        *count = items.size();
        return CKR_OK;
    }
    if (*count < items.size()) {
        *count = items.size();
        return CKR_BUFFER_TOO_SMALL;
    }
    std::copy(items.begin(), items.end(), out);
    *count = items.size();
    return CKR_OK;
}

extern CK_FUNCTION_LIST function_list;

// ---- general ----------------------------------------------------------------

CK_RV Initialize(CK_VOID_PTR args) noexcept {
    return guard("C_Initialize", [&] {
        initialize(args);
        return CKR_OK;
    });
}

CK_RV Finalize(CK_VOID_PTR reserved) noexcept {
    return guard("C_Finalize", [&] {
        finalize(reserved);
        return CKR_OK;
    });
}

CK_RV GetInfo(CK_INFO_PTR info) noexcept {
    return guard("C_GetInfo", [&] {
        current();
        require_arg(info, "info");
        std::memset(info, 0, sizeof *info);
        info->cryptokiVersion = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR};
        pad(info->manufacturerID, "preloadrun");
        pad(info->libraryDescription, "preloadrun PKCS#11 module");
        unsigned major = 0;
        unsigned minor = 0;
        std::sscanf(kVersion, "%u.%u", &major, &minor);
        info->libraryVersion = {static_cast<CK_BYTE>(major), static_cast<CK_BYTE>(minor)};
        return CKR_OK;
    });
}

CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) noexcept {
    if (list == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    *list = &function_list;
    return CKR_OK;
}

// ---- slots and tokens ---------------------------------------------------------

CK_RV GetSlotList(CK_BBOOL /*token_present*/, CK_SLOT_ID_PTR slots, CK_ULONG_PTR count) noexcept {
    return guard("C_GetSlotList", [&] {
        auto instance = current();
        std::vector<CK_SLOT_ID> ids(instance->slots().count());
        for (CK_SLOT_ID i = 0; i < ids.size(); ++i) {
            ids[i] = i;
        }
        return list_out(ids, slots, count);
    });
}

CK_RV GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info) noexcept {
    return guard("C_GetSlotInfo", [&] {
        auto instance = current();
        instance->slots().slot_info(slot, *require_arg(info, "info"));
        return CKR_OK;
    });
}

CK_RV GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) noexcept {
    return guard("C_GetTokenInfo", [&] {
        auto instance = current();
        instance->slots().token_info(slot, *require_arg(info, "info"));
        info->ulSessionCount = instance->sessions().count(slot, false);
        info->ulRwSessionCount = instance->sessions().count(slot, true);
        return CKR_OK;
    });
}

CK_RV GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count) noexcept {
    return guard("C_GetMechanismList", [&] {
        current()->slots().check(slot);
        std::vector<CK_MECHANISM_TYPE> types;
        for (const auto& spec : mechanism_table()) {
            types.push_back(spec.type);
        }
        return list_out(types, list, count);
    });
}

CK_RV GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                       CK_MECHANISM_INFO_PTR info) noexcept {
    return guard("C_GetMechanismInfo", [&] {
        current()->slots().check(slot);
        require_arg(info, "info");
        const auto* spec = find_mechanism(type);
        if (spec == nullptr) {
            return CKR_MECHANISM_INVALID;
        }
        info->ulMinKeySize = spec->min_size;
        info->ulMaxKeySize = spec->max_size;
        info->flags = spec->flags;
        return CKR_OK;
    });
}

CK_RV InitToken(CK_SLOT_ID, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR) noexcept {
    return guard("C_InitToken", not_supported);
}
CK_RV InitPIN(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG) noexcept {
    return guard("C_InitPIN", not_supported);
}
CK_RV SetPIN(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG) noexcept {
    return guard("C_SetPIN", not_supported);
}

// ---- sessions -------------------------------------------------------------------

CK_RV OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR, CK_NOTIFY,
                  CK_SESSION_HANDLE_PTR handle) noexcept {
    return guard("C_OpenSession", [&] {
        auto instance = current();
        instance->slots().check(slot);
        require_arg(handle, "session handle pointer");
        if ((flags & CKF_SERIAL_SESSION) == 0) {
            return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
        }
        *handle = instance->sessions().open(slot, flags)->handle;
        return CKR_OK;
    });
}

CK_RV CloseSession(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_CloseSession", [&] {
        auto instance = current();
        auto session = instance->sessions().close(handle);
        std::lock_guard lock(session->mutex); // waits for a call still running on it
        instance->closed(*session);
        return CKR_OK;
    });
}

CK_RV CloseAllSessions(CK_SLOT_ID slot) noexcept {
    return guard("C_CloseAllSessions", [&] {
        auto instance = current();
        instance->slots().check(slot);
        for (const auto& session : instance->sessions().close_all(slot)) {
            std::lock_guard lock(session->mutex);
            instance->closed(*session);
        }
        return CKR_OK;
    });
}

CK_RV GetSessionInfo(CK_SESSION_HANDLE handle, CK_SESSION_INFO_PTR info) noexcept {
    return guard("C_GetSessionInfo", [&] {
        auto call = with_session(handle);
        require_arg(info, "info");
        info->slotID = call.session->slot;
        info->flags = call.session->flags;
        info->state = call.instance->session_state(*call.session);
        info->ulDeviceError = 0;
        return CKR_OK;
    });
}

CK_RV GetOperationState(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_GetOperationState", not_supported);
}
CK_RV SetOperationState(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_OBJECT_HANDLE,
                        CK_OBJECT_HANDLE) noexcept {
    return guard("C_SetOperationState", not_supported);
}

CK_RV Login(CK_SESSION_HANDLE handle, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
            CK_ULONG pin_len) noexcept {
    return guard("C_Login", [&] {
        auto call = with_session(handle);
        call.instance->login(call.session->slot, user, in(pin, pin_len));
        return CKR_OK;
    });
}

CK_RV Logout(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_Logout", [&] {
        auto call = with_session(handle);
        call.instance->logout(call.session->slot);
        return CKR_OK;
    });
}

// ---- objects ----------------------------------------------------------------------

CK_RV CreateObject(CK_SESSION_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR) noexcept {
    return guard("C_CreateObject", not_supported);
}
CK_RV CopyObject(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                 CK_OBJECT_HANDLE_PTR) noexcept {
    return guard("C_CopyObject", not_supported);
}

CK_RV DestroyObject(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object) noexcept {
    return guard("C_DestroyObject", [&] {
        auto call = with_session(handle);
        destroy_object(*call.instance, *call.session, object);
        return CKR_OK;
    });
}

ObjectStore::Ref visible_object(SessionCall& call, CK_OBJECT_HANDLE object) {
    auto ref = call.instance->objects().get(object);
    if (!ref || !call.instance->visible(*ref, call.session->slot)) {
        throw CkError(CKR_OBJECT_HANDLE_INVALID, "no such object");
    }
    return *ref;
}

CK_RV GetObjectSize(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ULONG_PTR size) noexcept {
    return guard("C_GetObjectSize", [&] {
        auto call = with_session(handle);
        visible_object(call, object);
        *require_arg(size, "size") = CK_UNAVAILABLE_INFORMATION;
        return CKR_OK;
    });
}

CK_RV GetAttributeValue(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                        CK_ULONG count) noexcept {
    return guard("C_GetAttributeValue", [&] {
        auto call = with_session(handle);
        const auto ref = visible_object(call, object);
        if (count > 0) {
            require_arg(templ, "template");
        }
        return ref.attributes().get(templ, count);
    });
}

CK_RV SetAttributeValue(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR,
                        CK_ULONG) noexcept {
    return guard("C_SetAttributeValue", [&] {
        auto call = with_session(handle);
        visible_object(call, object);
        // Keys live in the Security World: their attributes are not modifiable.
        return CKR_ACTION_PROHIBITED;
    });
}

CK_RV FindObjectsInit(CK_SESSION_HANDLE handle, CK_ATTRIBUTE_PTR templ, CK_ULONG count) noexcept {
    return guard("C_FindObjectsInit", [&] {
        auto call = with_session(handle);
        if (count > 0) {
            require_arg(templ, "template");
        }
        auto& session = *call.session;
        if (session.finding) {
            return CKR_OPERATION_ACTIVE;
        }
        try {
            call.instance->refresh_objects();
        } catch (const Error& e) {
            logger().warn("key list not refreshed (showing the keys known): {}", e.what());
        }
        session.found.clear();
        session.found_pos = 0;
        for (const auto& ref : call.instance->objects().all()) {
            if (call.instance->visible(ref, session.slot) &&
                ref.attributes().matches(templ, count)) {
                session.found.push_back(ref.cls == CKO_PUBLIC_KEY ? ref.key->public_handle
                                                                  : ref.key->main_handle);
            }
        }
        std::sort(session.found.begin(), session.found.end());
        session.finding = true;
        return CKR_OK;
    });
}

CK_RV FindObjects(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
                  CK_ULONG_PTR count) noexcept {
    return guard("C_FindObjects", [&] {
        auto call = with_session(handle);
        auto& session = *call.session;
        require_arg(count, "count pointer");
        if (!session.finding) {
            return CKR_OPERATION_NOT_INITIALIZED;
        }
        if (max > 0) {
            require_arg(out, "object handle array");
        }
        CK_ULONG n = 0;
        while (n < max && session.found_pos < session.found.size()) {
            out[n++] = session.found[session.found_pos++];
        }
        *count = n;
        return CKR_OK;
    });
}

CK_RV FindObjectsFinal(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_FindObjectsFinal", [&] {
        auto call = with_session(handle);
        if (!call.session->finding) {
            return CKR_OPERATION_NOT_INITIALIZED;
        }
        call.session->finding = false;
        call.session->found.clear();
        return CKR_OK;
    });
}

// ---- cryptographic operations ------------------------------------------------------

CK_RV EncryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_EncryptInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::encrypt, mech, key);
        return CKR_OK;
    });
}

CK_RV Encrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) noexcept {
    return guard("C_Encrypt", [&] {
        auto call = with_session(handle);
        op_single(*call.instance, *call.session, OpKind::encrypt, in(data, len), {out, out_len});
        return CKR_OK;
    });
}

CK_RV EncryptUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR,
                    CK_ULONG_PTR out_len) noexcept {
    return guard("C_EncryptUpdate", [&] {
        auto call = with_session(handle);
        op_update(*call.session, OpKind::encrypt, in(data, len));
        *require_arg(out_len, "output length pointer") = 0;
        return CKR_OK;
    });
}

CK_RV EncryptFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept {
    return guard("C_EncryptFinal", [&] {
        auto call = with_session(handle);
        op_final(*call.instance, *call.session, OpKind::encrypt, {out, out_len});
        return CKR_OK;
    });
}

CK_RV DecryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_DecryptInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::decrypt, mech, key);
        return CKR_OK;
    });
}

CK_RV Decrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) noexcept {
    return guard("C_Decrypt", [&] {
        auto call = with_session(handle);
        op_single(*call.instance, *call.session, OpKind::decrypt, in(data, len), {out, out_len});
        return CKR_OK;
    });
}

CK_RV DecryptUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR,
                    CK_ULONG_PTR out_len) noexcept {
    return guard("C_DecryptUpdate", [&] {
        auto call = with_session(handle);
        op_update(*call.session, OpKind::decrypt, in(data, len));
        *require_arg(out_len, "output length pointer") = 0;
        return CKR_OK;
    });
}

CK_RV DecryptFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept {
    return guard("C_DecryptFinal", [&] {
        auto call = with_session(handle);
        op_final(*call.instance, *call.session, OpKind::decrypt, {out, out_len});
        return CKR_OK;
    });
}

CK_RV DigestInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR) noexcept {
    return guard("C_DigestInit", not_supported);
}
CK_RV Digest(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_Digest", not_supported);
}
CK_RV DigestUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG) noexcept {
    return guard("C_DigestUpdate", not_supported);
}
CK_RV DigestKey(CK_SESSION_HANDLE, CK_OBJECT_HANDLE) noexcept {
    return guard("C_DigestKey", not_supported);
}
CK_RV DigestFinal(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_DigestFinal", not_supported);
}

CK_RV SignInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_SignInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::sign, mech, key);
        return CKR_OK;
    });
}

CK_RV Sign(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
           CK_ULONG_PTR sig_len) noexcept {
    return guard("C_Sign", [&] {
        auto call = with_session(handle);
        op_single(*call.instance, *call.session, OpKind::sign, in(data, len), {sig, sig_len});
        return CKR_OK;
    });
}

CK_RV SignUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept {
    return guard("C_SignUpdate", [&] {
        auto call = with_session(handle);
        op_update(*call.session, OpKind::sign, in(data, len));
        return CKR_OK;
    });
}

CK_RV SignFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len) noexcept {
    return guard("C_SignFinal", [&] {
        auto call = with_session(handle);
        op_final(*call.instance, *call.session, OpKind::sign, {sig, sig_len});
        return CKR_OK;
    });
}

CK_RV SignRecoverInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) noexcept {
    return guard("C_SignRecoverInit", not_supported);
}
CK_RV SignRecover(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_SignRecover", not_supported);
}

CK_RV VerifyInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept {
    return guard("C_VerifyInit", [&] {
        auto call = with_session(handle);
        op_init(*call.instance, *call.session, OpKind::verify, mech, key);
        return CKR_OK;
    });
}

CK_RV Verify(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
             CK_ULONG sig_len) noexcept {
    return guard("C_Verify", [&] {
        auto call = with_session(handle);
        op_verify(*call.instance, *call.session, in(data, len), in(sig, sig_len));
        return CKR_OK;
    });
}

CK_RV VerifyUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept {
    return guard("C_VerifyUpdate", [&] {
        auto call = with_session(handle);
        op_update(*call.session, OpKind::verify, in(data, len));
        return CKR_OK;
    });
}

CK_RV VerifyFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR sig, CK_ULONG sig_len) noexcept {
    return guard("C_VerifyFinal", [&] {
        auto call = with_session(handle);
        op_verify(*call.instance, *call.session, {}, in(sig, sig_len));
        return CKR_OK;
    });
}

CK_RV VerifyRecoverInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) noexcept {
    return guard("C_VerifyRecoverInit", not_supported);
}
CK_RV VerifyRecover(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept {
    return guard("C_VerifyRecover", not_supported);
}
CK_RV DigestEncryptUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept {
    return guard("C_DigestEncryptUpdate", not_supported);
}
CK_RV DecryptDigestUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept {
    return guard("C_DecryptDigestUpdate", not_supported);
}
CK_RV SignEncryptUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                        CK_ULONG_PTR) noexcept {
    return guard("C_SignEncryptUpdate", not_supported);
}
CK_RV DecryptVerifyUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept {
    return guard("C_DecryptVerifyUpdate", not_supported);
}

// ---- keys and random ------------------------------------------------------------------

CK_RV GenerateKey(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR templ,
                  CK_ULONG count, CK_OBJECT_HANDLE_PTR key) noexcept {
    return guard("C_GenerateKey", [&] {
        auto call = with_session(handle);
        require_arg(key, "key handle pointer");
        *key = generate_secret_key(*call.instance, *call.session, *require_arg(mech, "mechanism"),
                                   {templ, count});
        return CKR_OK;
    });
}

CK_RV GenerateKeyPair(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pub,
                      CK_ULONG pub_count, CK_ATTRIBUTE_PTR priv, CK_ULONG priv_count,
                      CK_OBJECT_HANDLE_PTR pub_key, CK_OBJECT_HANDLE_PTR priv_key) noexcept {
    return guard("C_GenerateKeyPair", [&] {
        auto call = with_session(handle);
        require_arg(pub_key, "public key handle pointer");
        require_arg(priv_key, "private key handle pointer");
        auto [p, k] =
            generate_key_pair(*call.instance, *call.session, *require_arg(mech, "mechanism"),
                              {pub, pub_count}, {priv, priv_count});
        *pub_key = p;
        *priv_key = k;
        return CKR_OK;
    });
}

CK_RV WrapKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, CK_BYTE_PTR,
              CK_ULONG_PTR) noexcept {
    return guard("C_WrapKey", not_supported);
}
CK_RV UnwrapKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_BYTE_PTR, CK_ULONG,
                CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR) noexcept {
    return guard("C_UnwrapKey", not_supported);
}
CK_RV DeriveKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                CK_OBJECT_HANDLE_PTR) noexcept {
    return guard("C_DeriveKey", not_supported);
}

CK_RV SeedRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR, CK_ULONG) noexcept {
    return guard("C_SeedRandom", [&] {
        with_session(handle);
        return CKR_RANDOM_SEED_NOT_SUPPORTED;
    });
}

CK_RV GenerateRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG len) noexcept {
    return guard("C_GenerateRandom", [&] {
        auto call = with_session(handle);
        if (len == 0) {
            return CKR_OK;
        }
        require_arg(out, "output buffer");
        const Bytes bytes = random_bytes(*call.instance, len);
        std::memcpy(out, bytes.data(), bytes.size());
        return CKR_OK;
    });
}

CK_RV GetFunctionStatus(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_GetFunctionStatus", [&] {
        with_session(handle);
        return CKR_FUNCTION_NOT_PARALLEL;
    });
}

CK_RV CancelFunction(CK_SESSION_HANDLE handle) noexcept {
    return guard("C_CancelFunction", [&] {
        with_session(handle);
        return CKR_FUNCTION_NOT_PARALLEL;
    });
}

CK_RV WaitForSlotEvent(CK_FLAGS, CK_SLOT_ID_PTR, CK_VOID_PTR) noexcept {
    return guard("C_WaitForSlotEvent", not_supported);
}

CK_FUNCTION_LIST function_list = {
    {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
    Initialize,
    Finalize,
    GetInfo,
    GetFunctionList,
    GetSlotList,
    GetSlotInfo,
    GetTokenInfo,
    GetMechanismList,
    GetMechanismInfo,
    InitToken,
    InitPIN,
    SetPIN,
    OpenSession,
    CloseSession,
    CloseAllSessions,
    GetSessionInfo,
    GetOperationState,
    SetOperationState,
    Login,
    Logout,
    CreateObject,
    CopyObject,
    DestroyObject,
    GetObjectSize,
    GetAttributeValue,
    SetAttributeValue,
    FindObjectsInit,
    FindObjects,
    FindObjectsFinal,
    EncryptInit,
    Encrypt,
    EncryptUpdate,
    EncryptFinal,
    DecryptInit,
    Decrypt,
    DecryptUpdate,
    DecryptFinal,
    DigestInit,
    Digest,
    DigestUpdate,
    DigestKey,
    DigestFinal,
    SignInit,
    Sign,
    SignUpdate,
    SignFinal,
    SignRecoverInit,
    SignRecover,
    VerifyInit,
    Verify,
    VerifyUpdate,
    VerifyFinal,
    VerifyRecoverInit,
    VerifyRecover,
    DigestEncryptUpdate,
    DecryptDigestUpdate,
    SignEncryptUpdate,
    DecryptVerifyUpdate,
    GenerateKey,
    GenerateKeyPair,
    WrapKey,
    UnwrapKey,
    DeriveKey,
    SeedRandom,
    GenerateRandom,
    GetFunctionStatus,
    CancelFunction,
    WaitForSlotEvent,
};

} // namespace

} // namespace preloadrun::pkcs11

extern "C" __attribute__((visibility("default"))) CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    return preloadrun::pkcs11::GetFunctionList(list);
}
