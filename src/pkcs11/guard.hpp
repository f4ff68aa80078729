#pragma once
// The noexcept barrier of every C_* entry point: runs the body and maps
// whatever it throws to a CK_RV, in this one place.

#include "ck.hpp"
#include "preloadrun/common/error.hpp"

#include <new>
#include <string_view>

namespace preloadrun::pkcs11 {

// The CK_RV for an error of the shared code (HSM service, files, ...).
CK_RV to_rv(const Error& error) noexcept;

// Logs the failure (debug for expected outcomes, warn/error for others).
void log_failure(std::string_view function, CK_RV rv, std::string_view why) noexcept;

template <class Body> CK_RV guard(std::string_view function, Body&& body) noexcept {
    try {
        return body();
    } catch (const CkError& e) {
        if (!e.reported()) {
            log_failure(function, e.rv(), e.what());
        }
        return e.rv();
    } catch (const Error& e) {
        const CK_RV rv = to_rv(e);
        log_failure(function, rv, e.what());
        return rv;
    } catch (const std::bad_alloc&) {
        log_failure(function, CKR_HOST_MEMORY, "out of memory");
        return CKR_HOST_MEMORY;
    } catch (const std::exception& e) {
        log_failure(function, CKR_GENERAL_ERROR, e.what());
        return CKR_GENERAL_ERROR;
    } catch (...) {
        log_failure(function, CKR_GENERAL_ERROR, "unknown exception");
        return CKR_GENERAL_ERROR;
    }
}

} // namespace preloadrun::pkcs11
