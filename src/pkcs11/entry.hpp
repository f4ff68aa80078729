#pragma once
// The C_* entry points, one file per group (entry.cpp: general functions and
// the function list; entry_slots.cpp: slots, tokens, sessions and login;
// entry_objects.cpp: objects; entry_crypto.cpp: cryptographic operations,
// keys and random). Each entry point is a noexcept barrier: guard() runs its
// body and maps whatever it throws to a CK_RV. The per-call preconditions
// (initialised? valid session? its lock) are in with_session(). Only
// C_GetFunctionList, C_GetInterfaceList and C_GetInterface are exported
// (pkcs11.map, entry_interface.cpp); these are hidden.

#include "ck.hpp"
#include "guard.hpp"
#include "lifecycle.hpp"

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string_view>
#include <vector>

namespace preloadrun::pkcs11::entry {

// The preconditions of every call on a session, in one place: initialised,
// valid session, its lock held for the whole call.
struct SessionCall {
    std::shared_ptr<Instance> instance;
    std::shared_ptr<Session> session;
    std::unique_lock<std::mutex> lock;
};

inline SessionCall with_session(CK_SESSION_HANDLE handle) {
    auto instance = current();
    auto session = instance->sessions().get(handle);
    std::unique_lock lock(session->mutex);
    return {std::move(instance), std::move(session), std::move(lock)};
}

template <std::size_t N> void pad(unsigned char (&field)[N], std::string_view text) {
    std::memset(field, ' ', N);
    std::memcpy(field, text.data(), std::min(N, text.size()));
}

inline std::span<const std::uint8_t> in(CK_BYTE_PTR data, CK_ULONG len) {
    if (len == 0) {
        return {};
    }
    return {require_arg(data, "data"), len};
}

inline CK_RV not_supported() {
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

// general
CK_RV Initialize(CK_VOID_PTR args) noexcept;
CK_RV Finalize(CK_VOID_PTR reserved) noexcept;
CK_RV GetInfo(CK_INFO_PTR info) noexcept;
CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) noexcept;

// slots and tokens
CK_RV GetSlotList(CK_BBOOL /*token_present*/, CK_SLOT_ID_PTR slots, CK_ULONG_PTR count) noexcept;
CK_RV GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info) noexcept;
CK_RV GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) noexcept;
CK_RV GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count) noexcept;
CK_RV GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                       CK_MECHANISM_INFO_PTR info) noexcept;
CK_RV InitToken(CK_SLOT_ID, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR) noexcept;
CK_RV InitPIN(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG) noexcept;
CK_RV SetPIN(CK_SESSION_HANDLE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG) noexcept;

// sessions
CK_RV OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR, CK_NOTIFY,
                  CK_SESSION_HANDLE_PTR handle) noexcept;
CK_RV CloseSession(CK_SESSION_HANDLE handle) noexcept;
CK_RV CloseAllSessions(CK_SLOT_ID slot) noexcept;
CK_RV GetSessionInfo(CK_SESSION_HANDLE handle, CK_SESSION_INFO_PTR info) noexcept;
CK_RV GetOperationState(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR) noexcept;
CK_RV SetOperationState(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_OBJECT_HANDLE,
                        CK_OBJECT_HANDLE) noexcept;
CK_RV Login(CK_SESSION_HANDLE handle, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
            CK_ULONG pin_len) noexcept;
CK_RV Logout(CK_SESSION_HANDLE handle) noexcept;

// objects
CK_RV CreateObject(CK_SESSION_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR) noexcept;
CK_RV CopyObject(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                 CK_OBJECT_HANDLE_PTR) noexcept;
CK_RV DestroyObject(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object) noexcept;
CK_RV GetObjectSize(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ULONG_PTR size) noexcept;
CK_RV GetAttributeValue(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                        CK_ULONG count) noexcept;
CK_RV SetAttributeValue(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR,
                        CK_ULONG) noexcept;
CK_RV FindObjectsInit(CK_SESSION_HANDLE handle, CK_ATTRIBUTE_PTR templ, CK_ULONG count) noexcept;
CK_RV FindObjects(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE_PTR out, CK_ULONG max,
                  CK_ULONG_PTR count) noexcept;
CK_RV FindObjectsFinal(CK_SESSION_HANDLE handle) noexcept;

// cryptographic operations
CK_RV EncryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept;
CK_RV Encrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) noexcept;
CK_RV EncryptUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR,
                    CK_ULONG_PTR out_len) noexcept;
CK_RV EncryptFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept;
CK_RV DecryptInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept;
CK_RV Decrypt(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
              CK_ULONG_PTR out_len) noexcept;
CK_RV DecryptUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR,
                    CK_ULONG_PTR out_len) noexcept;
CK_RV DecryptFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG_PTR out_len) noexcept;
CK_RV DigestInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR) noexcept;
CK_RV Digest(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept;
CK_RV DigestUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG) noexcept;
CK_RV DigestKey(CK_SESSION_HANDLE, CK_OBJECT_HANDLE) noexcept;
CK_RV DigestFinal(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR) noexcept;
CK_RV SignInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept;
CK_RV Sign(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
           CK_ULONG_PTR sig_len) noexcept;
CK_RV SignUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept;
CK_RV SignFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len) noexcept;
CK_RV SignRecoverInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) noexcept;
CK_RV SignRecover(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept;
CK_RV VerifyInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key) noexcept;
CK_RV Verify(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig,
             CK_ULONG sig_len) noexcept;
CK_RV VerifyUpdate(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG len) noexcept;
CK_RV VerifyFinal(CK_SESSION_HANDLE handle, CK_BYTE_PTR sig, CK_ULONG sig_len) noexcept;
CK_RV VerifyRecoverInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE) noexcept;
CK_RV VerifyRecover(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR) noexcept;
CK_RV DigestEncryptUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept;
CK_RV DecryptDigestUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept;
CK_RV SignEncryptUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                        CK_ULONG_PTR) noexcept;
CK_RV DecryptVerifyUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR,
                          CK_ULONG_PTR) noexcept;

// keys and random
CK_RV GenerateKey(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR templ,
                  CK_ULONG count, CK_OBJECT_HANDLE_PTR key) noexcept;
CK_RV GenerateKeyPair(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mech, CK_ATTRIBUTE_PTR pub,
                      CK_ULONG pub_count, CK_ATTRIBUTE_PTR priv, CK_ULONG priv_count,
                      CK_OBJECT_HANDLE_PTR pub_key, CK_OBJECT_HANDLE_PTR priv_key) noexcept;
CK_RV WrapKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_OBJECT_HANDLE, CK_BYTE_PTR,
              CK_ULONG_PTR) noexcept;
CK_RV UnwrapKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_BYTE_PTR, CK_ULONG,
                CK_ATTRIBUTE_PTR, CK_ULONG, CK_OBJECT_HANDLE_PTR) noexcept;
CK_RV DeriveKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                CK_OBJECT_HANDLE_PTR) noexcept;
CK_RV SeedRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR, CK_ULONG) noexcept;
CK_RV GenerateRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG len) noexcept;
CK_RV GetFunctionStatus(CK_SESSION_HANDLE handle) noexcept;
CK_RV CancelFunction(CK_SESSION_HANDLE handle) noexcept;
CK_RV WaitForSlotEvent(CK_FLAGS, CK_SLOT_ID_PTR, CK_VOID_PTR) noexcept;

} // namespace preloadrun::pkcs11::entry
