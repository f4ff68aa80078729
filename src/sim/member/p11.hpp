#pragma once
// What the service and a member's worker both know of PKCS#11: the names of
// return values, for messages, and what a return value means for the member
// (its token went away or was reset, a wrong PIN, ...).

#include "preloadrun/common/error.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"

#include <string>

namespace preloadrun::sim::member {

// "CKR_PIN_INCORRECT", or "CKR_0x000001A0" for a value without a name here.
std::string rv_name(CK_RV rv);

// What a failed call means for the member that answered it.
enum class RvMeaning {
    gone,       // the token, its session or its login went away: the member was reset or failed
    wrong_pin,  // CKR_PIN_INCORRECT (and the like)
    pin_locked, // CKR_PIN_LOCKED
    bad_signature,
    not_logged_in, // CKR_USER_NOT_LOGGED_IN: as `gone` once a login was made
    refused,       // the operation itself was refused (mechanism, data, key): say so to the caller
};
RvMeaning meaning_of(CK_RV rv);

// The Error for the caller of an operation that failed with `rv` on member
// `member` in `function` (message: what the worker added).
Error error_of(CK_RV rv, const std::string& member, const std::string& function,
               const std::string& message);

} // namespace preloadrun::sim::member
