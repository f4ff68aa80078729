#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <cstring>
#include <string>

namespace preloadrun {

std::string_view to_string(ErrorCode code) noexcept {
    switch (code) {
    case ErrorCode::internal:
        return "internal error";
    case ErrorCode::usage:
        return "usage error";
    case ErrorCode::io:
        return "I/O error";
    case ErrorCode::corrupt:
        return "corrupt data";
    case ErrorCode::not_found:
        return "not found";
    case ErrorCode::already_exists:
        return "already exists";
    case ErrorCode::wrong_passphrase:
        return "wrong passphrase";
    case ErrorCode::permission:
        return "permission denied";
    case ErrorCode::unavailable:
        return "service unavailable";
    case ErrorCode::protocol:
        return "protocol error";
    case ErrorCode::timeout:
        return "timed out";
    case ErrorCode::module_not_usable:
        return "module not usable";
    case ErrorCode::transient:
        return "transient failure";
    case ErrorCode::invalid_handle:
        return "invalid handle";
    case ErrorCode::limit:
        return "limit reached";
    case ErrorCode::crypto:
        return "cryptographic failure";
    case ErrorCode::bad_signature:
        return "signature invalid";
    case ErrorCode::conflict:
        return "not possible in the current state";
    case ErrorCode::too_many_attempts:
        return "too many wrong passphrases";
    }
    return "unknown error";
}

void throw_errno(std::string_view what, int err) {
    std::string msg(what);
    msg += ": ";
    msg += std::strerror(err);
    throw Error(ErrorCode::io, msg);
}

void throw_errno(std::string_view what) {
    throw_errno(what, errno);
}

} // namespace preloadrun
