// General entry points (C_Initialize, C_Finalize, C_GetInfo) and the
// function list; the exported C_GetFunctionList. See entry.hpp.

#include "entry.hpp"

#include "preloadrun/version.hpp"

namespace preloadrun::pkcs11::entry {

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

namespace {

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

CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) noexcept {
    if (list == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    *list = &function_list;
    return CKR_OK;
}

} // namespace preloadrun::pkcs11::entry

extern "C" __attribute__((visibility("default"))) CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    return preloadrun::pkcs11::entry::GetFunctionList(list);
}
