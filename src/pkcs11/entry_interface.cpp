// PKCS#11 3.0: the interfaces (C_GetInterfaceList, C_GetInterface, exported
// beside C_GetFunctionList), and the 3.0 function list: the 2.40 functions,
// then C_LoginUser and C_SessionCancel; the message-based functions are not
// offered (CKR_FUNCTION_NOT_SUPPORTED). Two interfaces named "PKCS 11": 3.0
// (the default) and 2.40, each reporting its version in C_GetInfo.

#include "entry.hpp"

namespace preloadrun::pkcs11::entry {

namespace {

CK_RV LoginUser(CK_SESSION_HANDLE handle, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len,
                CK_UTF8CHAR_PTR, CK_ULONG) noexcept {
    // A softcard has one user: the user name is not used (PKCS#11 3.0,
    // C_LoginUser: tokens without user names ignore it).
    return Login(handle, user, pin, pin_len);
}

CK_RV SessionCancel(CK_SESSION_HANDLE handle, CK_FLAGS flags) noexcept {
    return guard("C_SessionCancel", [&] {
        auto call = with_session(handle);
        auto& s = *call.session;
        constexpr CK_FLAGS kFindObjects = 0x00000040UL; // CKF_FIND_OBJECTS
        if ((flags & CKF_ENCRYPT) != 0) {
            s.encrypt.reset();
        }
        if ((flags & CKF_DECRYPT) != 0) {
            s.decrypt.reset();
        }
        if ((flags & CKF_DIGEST) != 0) {
            s.digest.reset();
        }
        if ((flags & CKF_SIGN) != 0) {
            s.sign.reset();
        }
        if ((flags & CKF_VERIFY) != 0) {
            s.verify.reset();
        }
        if ((flags & kFindObjects) != 0) {
            s.finding = false;
            s.found.clear();
        }
        return CKR_OK;
    });
}

template <class... Args> CK_RV message_function(Args...) noexcept {
    return guard("a message-based function (PKCS#11 3.0)", not_supported);
}

CK_RV GetInfo30(CK_INFO_PTR info) noexcept {
    const CK_RV rv = GetInfo(info);
    if (rv == CKR_OK) {
        info->cryptokiVersion = {3, 0};
    }
    return rv;
}

CK_RV GetInterfaceList(CK_INTERFACE_PTR list, CK_ULONG_PTR count) noexcept;
CK_RV GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR out,
                   CK_FLAGS flags) noexcept;

CK_FUNCTION_LIST_3_0 make_list_30() {
    CK_FUNCTION_LIST_3_0 list{};
    CK_FUNCTION_LIST_PTR v2 = nullptr;
    GetFunctionList(&v2);
    list.v2 = *v2;
    list.v2.version = {3, 0};
    list.v2.C_GetInfo = GetInfo30;
    list.C_GetInterfaceList = GetInterfaceList;
    list.C_GetInterface = GetInterface;
    list.C_LoginUser = LoginUser;
    list.C_SessionCancel = SessionCancel;
    list.C_MessageEncryptInit = message_function;
    list.C_EncryptMessage = message_function;
    list.C_EncryptMessageBegin = message_function;
    list.C_EncryptMessageNext = message_function;
    list.C_MessageEncryptFinal = message_function;
    list.C_MessageDecryptInit = message_function;
    list.C_DecryptMessage = message_function;
    list.C_DecryptMessageBegin = message_function;
    list.C_DecryptMessageNext = message_function;
    list.C_MessageDecryptFinal = message_function;
    list.C_MessageSignInit = message_function;
    list.C_SignMessage = message_function;
    list.C_SignMessageBegin = message_function;
    list.C_SignMessageNext = message_function;
    list.C_MessageSignFinal = message_function;
    list.C_MessageVerifyInit = message_function;
    list.C_VerifyMessage = message_function;
    list.C_VerifyMessageBegin = message_function;
    list.C_VerifyMessageNext = message_function;
    list.C_MessageVerifyFinal = message_function;
    return list;
}

CK_FUNCTION_LIST_3_0 list_30 = make_list_30();

CK_CHAR kName[] = "PKCS 11";

// The 3.0 interface first: it is the default.
CK_INTERFACE* interfaces() {
    static CK_INTERFACE all[2] = {
        {kName, &list_30, 0},
        {kName, nullptr, 0},
    };
    if (all[1].pFunctionList == nullptr) {
        CK_FUNCTION_LIST_PTR v2 = nullptr;
        GetFunctionList(&v2);
        all[1].pFunctionList = v2;
    }
    return all;
}

CK_VERSION version_of(const CK_INTERFACE& i) {
    return static_cast<const CK_FUNCTION_LIST*>(i.pFunctionList)->version;
}

CK_RV GetInterfaceList(CK_INTERFACE_PTR list, CK_ULONG_PTR count) noexcept {
    if (count == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    CK_INTERFACE* all = interfaces();
    if (list == nullptr) {
        *count = 2;
        return CKR_OK;
    }
    if (*count < 2) {
        *count = 2;
        return CKR_BUFFER_TOO_SMALL;
    }
    list[0] = all[0];
    list[1] = all[1];
    *count = 2;
    return CKR_OK;
}

CK_RV GetInterface(CK_UTF8CHAR_PTR name, CK_VERSION_PTR version, CK_INTERFACE_PTR_PTR out,
                   CK_FLAGS flags) noexcept {
    if (out == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    CK_INTERFACE* all = interfaces();
    for (int i = 0; i < 2; ++i) {
        if (name != nullptr && std::strcmp(reinterpret_cast<const char*>(name),
                                           reinterpret_cast<const char*>(kName)) != 0) {
            continue;
        }
        const CK_VERSION v = version_of(all[i]);
        if (version != nullptr && (version->major != v.major || version->minor != v.minor)) {
            continue;
        }
        if ((all[i].flags & flags) != flags) {
            continue; // e.g. CKF_INTERFACE_FORK_SAFE: not promised
        }
        *out = &all[i];
        return CKR_OK;
    }
    return CKR_ARGUMENTS_BAD; // no such interface
}

} // namespace

} // namespace preloadrun::pkcs11::entry

extern "C" __attribute__((visibility("default"))) CK_RV C_GetInterfaceList(CK_INTERFACE_PTR list,
                                                                           CK_ULONG_PTR count) {
    return preloadrun::pkcs11::entry::GetInterfaceList(list, count);
}

extern "C" __attribute__((visibility("default"))) CK_RV C_GetInterface(CK_UTF8CHAR_PTR name,
                                                                       CK_VERSION_PTR version,
                                                                       CK_INTERFACE_PTR_PTR out,
                                                                       CK_FLAGS flags) {
    return preloadrun::pkcs11::entry::GetInterface(name, version, out, flags);
}
