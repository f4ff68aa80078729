#include "member/p11.hpp"

#include <array>
#include <cstdio>
#include <utility>

namespace preloadrun::sim::member {

namespace {

struct RvRow {
    CK_RV rv;
    const char* name;
    RvMeaning meaning;
};

// clang-format off
constexpr RvRow kRvs[] = {
    {CKR_OK,                           "CKR_OK",                           RvMeaning::refused},
    {CKR_HOST_MEMORY,                  "CKR_HOST_MEMORY",                  RvMeaning::gone},
    {CKR_SLOT_ID_INVALID,              "CKR_SLOT_ID_INVALID",              RvMeaning::gone},
    {CKR_GENERAL_ERROR,                "CKR_GENERAL_ERROR",                RvMeaning::gone},
    {CKR_FUNCTION_FAILED,              "CKR_FUNCTION_FAILED",              RvMeaning::refused},
    {CKR_ARGUMENTS_BAD,                "CKR_ARGUMENTS_BAD",                RvMeaning::refused},
    {CKR_ATTRIBUTE_TYPE_INVALID,       "CKR_ATTRIBUTE_TYPE_INVALID",       RvMeaning::refused},
    {CKR_DATA_INVALID,                 "CKR_DATA_INVALID",                 RvMeaning::refused},
    {CKR_DATA_LEN_RANGE,               "CKR_DATA_LEN_RANGE",               RvMeaning::refused},
    {CKR_DEVICE_ERROR,                 "CKR_DEVICE_ERROR",                 RvMeaning::gone},
    {CKR_DEVICE_MEMORY,                "CKR_DEVICE_MEMORY",                RvMeaning::gone},
    {CKR_DEVICE_REMOVED,               "CKR_DEVICE_REMOVED",               RvMeaning::gone},
    {CKR_ENCRYPTED_DATA_INVALID,       "CKR_ENCRYPTED_DATA_INVALID",       RvMeaning::refused},
    {CKR_ENCRYPTED_DATA_LEN_RANGE,     "CKR_ENCRYPTED_DATA_LEN_RANGE",     RvMeaning::refused},
    {CKR_FUNCTION_NOT_SUPPORTED,       "CKR_FUNCTION_NOT_SUPPORTED",       RvMeaning::refused},
    {CKR_KEY_HANDLE_INVALID,           "CKR_KEY_HANDLE_INVALID",           RvMeaning::gone},
    {CKR_KEY_TYPE_INCONSISTENT,        "CKR_KEY_TYPE_INCONSISTENT",        RvMeaning::refused},
    {CKR_KEY_FUNCTION_NOT_PERMITTED,   "CKR_KEY_FUNCTION_NOT_PERMITTED",   RvMeaning::refused},
    {CKR_MECHANISM_INVALID,            "CKR_MECHANISM_INVALID",            RvMeaning::refused},
    {CKR_MECHANISM_PARAM_INVALID,      "CKR_MECHANISM_PARAM_INVALID",      RvMeaning::refused},
    {CKR_OBJECT_HANDLE_INVALID,        "CKR_OBJECT_HANDLE_INVALID",        RvMeaning::gone},
    {CKR_OPERATION_ACTIVE,             "CKR_OPERATION_ACTIVE",             RvMeaning::gone},
    {CKR_PIN_INCORRECT,                "CKR_PIN_INCORRECT",                RvMeaning::wrong_pin},
    {CKR_PIN_INVALID,                  "CKR_PIN_INVALID",                  RvMeaning::wrong_pin},
    {CKR_PIN_LEN_RANGE,                "CKR_PIN_LEN_RANGE",                RvMeaning::wrong_pin},
    {CKR_PIN_EXPIRED,                  "CKR_PIN_EXPIRED",                  RvMeaning::refused},
    {CKR_PIN_LOCKED,                   "CKR_PIN_LOCKED",                   RvMeaning::pin_locked},
    {CKR_SESSION_CLOSED,               "CKR_SESSION_CLOSED",               RvMeaning::gone},
    {CKR_SESSION_COUNT,                "CKR_SESSION_COUNT",                RvMeaning::gone},
    {CKR_SESSION_HANDLE_INVALID,       "CKR_SESSION_HANDLE_INVALID",       RvMeaning::gone},
    {CKR_SIGNATURE_INVALID,            "CKR_SIGNATURE_INVALID",            RvMeaning::bad_signature},
    {CKR_SIGNATURE_LEN_RANGE,          "CKR_SIGNATURE_LEN_RANGE",          RvMeaning::bad_signature},
    {CKR_TOKEN_NOT_PRESENT,            "CKR_TOKEN_NOT_PRESENT",            RvMeaning::gone},
    {CKR_TOKEN_NOT_RECOGNIZED,         "CKR_TOKEN_NOT_RECOGNIZED",         RvMeaning::gone},
    {CKR_USER_ALREADY_LOGGED_IN,       "CKR_USER_ALREADY_LOGGED_IN",       RvMeaning::refused},
    {CKR_USER_NOT_LOGGED_IN,           "CKR_USER_NOT_LOGGED_IN",           RvMeaning::not_logged_in},
    {CKR_USER_PIN_NOT_INITIALIZED,     "CKR_USER_PIN_NOT_INITIALIZED",     RvMeaning::refused},
    {CKR_USER_TYPE_INVALID,            "CKR_USER_TYPE_INVALID",            RvMeaning::refused},
    {CKR_BUFFER_TOO_SMALL,             "CKR_BUFFER_TOO_SMALL",             RvMeaning::refused},
    {CKR_CRYPTOKI_NOT_INITIALIZED,     "CKR_CRYPTOKI_NOT_INITIALIZED",     RvMeaning::gone},
    {CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED", RvMeaning::refused},
};
// clang-format on

const RvRow* row_of(CK_RV rv) {
    for (const auto& row : kRvs) {
        if (row.rv == rv) {
            return &row;
        }
    }
    return nullptr;
}

} // namespace

std::string rv_name(CK_RV rv) {
    if (const auto* row = row_of(rv)) {
        return row->name;
    }
    std::array<char, 32> text{};
    std::snprintf(text.data(), text.size(), "CKR_0x%08lX", static_cast<unsigned long>(rv));
    return text.data();
}

RvMeaning meaning_of(CK_RV rv) {
    const auto* row = row_of(rv);
    return row != nullptr ? row->meaning : RvMeaning::refused;
}

Error error_of(CK_RV rv, const std::string& member, const std::string& function,
               const std::string& message) {
    std::string what = "member " + member + ": " + function;
    if (function.rfind("C_", 0) == 0) {
        what += " returned " + rv_name(rv);
    }
    if (!message.empty()) {
        what += ": " + message;
    }
    switch (meaning_of(rv)) {
    case RvMeaning::wrong_pin:
        return Error(ErrorCode::wrong_passphrase, what);
    case RvMeaning::pin_locked:
        return Error(ErrorCode::too_many_attempts, what);
    case RvMeaning::bad_signature:
        return Error(ErrorCode::bad_signature, what);
    case RvMeaning::gone:
    case RvMeaning::not_logged_in:
        return Error(ErrorCode::module_not_usable, what);
    case RvMeaning::refused:
        break;
    }
    return Error(ErrorCode::crypto, what);
}

} // namespace preloadrun::sim::member
