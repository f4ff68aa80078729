// Entry points for slots, tokens, mechanisms, sessions and login.

#include "entry.hpp"
#include "mechanisms.hpp"

namespace preloadrun::pkcs11::entry {

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
        auto instance = current();
        instance->slots().check(slot);
        std::vector<CK_MECHANISM_TYPE> types;
        for (const auto& spec : mechanism_table()) {
            if (instance->offers(spec.kind)) {
                types.push_back(spec.type);
            }
        }
        for (const auto& spec : digest_table()) {
            types.push_back(spec.type); // in this process: every module "offers" them
        }
        return list_out(types, list, count);
    });
}

CK_RV GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                       CK_MECHANISM_INFO_PTR info) noexcept {
    return guard("C_GetMechanismInfo", [&] {
        auto instance = current();
        instance->slots().check(slot);
        require_arg(info, "info");
        if (find_digest(type) != nullptr) {
            info->ulMinKeySize = 0;
            info->ulMaxKeySize = 0;
            info->flags = CKF_DIGEST;
            return CKR_OK;
        }
        const auto* spec = find_mechanism(type);
        if (spec == nullptr || !instance->offers(spec->kind)) {
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
CK_RV InitPIN(CK_SESSION_HANDLE handle, CK_UTF8CHAR_PTR, CK_ULONG) noexcept {
    return guard("C_InitPIN", [&] {
        with_session(handle);
        // Only the security officer may, and these tokens have none: a
        // softcard's passphrase is set when it is created.
        throw CkError(CKR_USER_NOT_LOGGED_IN,
                      "C_InitPIN needs the security officer, and the tokens have none");
        return CKR_OK;
    });
}
CK_RV SetPIN(CK_SESSION_HANDLE handle, CK_UTF8CHAR_PTR old_pin, CK_ULONG old_len,
             CK_UTF8CHAR_PTR new_pin, CK_ULONG new_len) noexcept {
    return guard("C_SetPIN", [&] {
        auto call = with_session(handle);
        if ((call.session->flags & CKF_RW_SESSION) == 0) {
            throw CkError(CKR_SESSION_READ_ONLY, "C_SetPIN needs a read/write session");
        }
        if (old_pin == nullptr || new_pin == nullptr) {
            throw CkError(CKR_ARGUMENTS_BAD, "no PIN given (the tokens have no PIN pad)");
        }
        call.instance->set_pin(call.session->slot, in(old_pin, old_len), in(new_pin, new_len));
        return CKR_OK;
    });
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
        if (pin == nullptr) {
            // A NULL PIN means a protected authentication path (a PIN pad),
            // which no token of the module has.
            throw CkError(CKR_ARGUMENTS_BAD, "no PIN given (the tokens have no PIN pad)");
        }
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

} // namespace preloadrun::pkcs11::entry
