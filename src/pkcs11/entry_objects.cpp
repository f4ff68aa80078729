// Entry points for objects: destroy, attributes, search.

#include "entry.hpp"
#include "log.hpp"
#include "object_lifecycle.hpp"

namespace preloadrun::pkcs11::entry {

// ---- objects ----------------------------------------------------------------------

CK_RV CreateObject(CK_SESSION_HANDLE handle, CK_ATTRIBUTE_PTR templ, CK_ULONG count,
                   CK_OBJECT_HANDLE_PTR object) noexcept {
    return guard("C_CreateObject", [&] {
        auto call = with_session(handle);
        require_arg(object, "object handle pointer");
        *object = create_object(*call.instance, *call.session, {templ, count});
        return CKR_OK;
    });
}
CK_RV CopyObject(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                 CK_ULONG count, CK_OBJECT_HANDLE_PTR copy) noexcept {
    return guard("C_CopyObject", [&] {
        auto call = with_session(handle);
        require_arg(copy, "new object handle pointer");
        *copy = copy_object(*call.instance, *call.session, object, {templ, count});
        return CKR_OK;
    });
}

CK_RV DestroyObject(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object) noexcept {
    return guard("C_DestroyObject", [&] {
        auto call = with_session(handle);
        destroy_object(*call.instance, *call.session, object);
        return CKR_OK;
    });
}

namespace {

ObjectStore::Ref visible_object(SessionCall& call, CK_OBJECT_HANDLE object) {
    auto ref = call.instance->objects().get(object);
    if (!ref || !call.instance->visible(*ref, call.session->slot)) {
        throw CkError(CKR_OBJECT_HANDLE_INVALID, "no such object");
    }
    return *ref;
}

} // namespace

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

CK_RV SetAttributeValue(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_PTR templ,
                        CK_ULONG count) noexcept {
    return guard("C_SetAttributeValue", [&] {
        auto call = with_session(handle);
        set_attributes(*call.instance, *call.session, object, {templ, count});
        return CKR_OK;
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
                session.found.push_back(ref.handle);
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

} // namespace preloadrun::pkcs11::entry
