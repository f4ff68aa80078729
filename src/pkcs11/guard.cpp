#include "pkcs11/guard.hpp"

#include "pkcs11/log.hpp"

namespace preloadrun::pkcs11 {

CK_RV to_rv(const Error& error) noexcept {
    switch (error.code()) {
    case ErrorCode::wrong_passphrase:
        return CKR_PIN_INCORRECT;
    case ErrorCode::too_many_attempts:
        return CKR_PIN_LOCKED;
    case ErrorCode::bad_signature:
        return CKR_SIGNATURE_INVALID;
    case ErrorCode::usage:
        return CKR_ARGUMENTS_BAD;
    case ErrorCode::not_found:
        return CKR_KEY_HANDLE_INVALID;
    case ErrorCode::limit:
        return CKR_DEVICE_MEMORY;
    case ErrorCode::crypto:
    case ErrorCode::permission:
    case ErrorCode::conflict:
    case ErrorCode::already_exists:
        return CKR_FUNCTION_FAILED;
    case ErrorCode::unavailable:
    case ErrorCode::timeout:
    case ErrorCode::protocol:
    case ErrorCode::module_not_usable:
    case ErrorCode::transient:
    case ErrorCode::invalid_handle:
    case ErrorCode::io:
    case ErrorCode::corrupt:
        return CKR_DEVICE_ERROR;
    case ErrorCode::internal:
        break;
    }
    return CKR_GENERAL_ERROR;
}

void log_failure(std::string_view function, CK_RV rv, std::string_view why) noexcept {
    try {
        // Outcomes an application meets in normal use are debug; device
        // and internal failures are worth an operator's attention.
        const bool serious = rv == CKR_DEVICE_ERROR || rv == CKR_GENERAL_ERROR ||
                             rv == CKR_FUNCTION_FAILED || rv == CKR_HOST_MEMORY;
        logger().log(serious ? spdlog::level::warn : spdlog::level::debug, "{} -> CKR 0x{:x}: {}",
                     function, rv, why);
    } catch (...) {
    }
}

} // namespace preloadrun::pkcs11
