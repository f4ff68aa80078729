#pragma once
// The one family of exceptions used across preloadrun, the PKCS#11 module and
// hsmsim. Low-level code throws preloadrun::Error with a code; each program
// maps codes to its own outcome at exactly one boundary (exit status, CK_RV,
// wire error reply).

#include <stdexcept>
#include <string>
#include <string_view>

namespace preloadrun {

enum class ErrorCode {
    internal,          // a bug or an unexpected library failure
    usage,             // bad arguments or options
    io,                // a file or socket operation failed
    corrupt,           // a file or message is malformed
    not_found,         // no such token, key, module or file
    already_exists,    // name or path taken
    wrong_passphrase,  // the passphrase does not unlock the token
    permission,        // the caller may not do this (uid, mode, admin-only)
    unavailable,       // the HSM service cannot be reached
    protocol,          // the peer broke the wire protocol or versions differ
    timeout,           // no answer in time
    module_not_usable, // the module is initialising, failed or removed
    transient,         // a temporary failure: retrying may succeed
    invalid_handle,    // no such object on that module (cleared or never loaded)
    limit,             // a size or count limit was reached
    crypto,            // the cryptographic operation failed (bad key, bad data)
    bad_signature,     // verification ran and the signature does not match
    conflict,          // not possible in the current state (e.g. restore a usable module)
    too_many_attempts, // too many wrong passphrases: refused without checking, try again later
};

std::string_view to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
    ErrorCode code() const noexcept { return code_; }

private:
    ErrorCode code_;
};

// Throws Error(io) with "what: strerror(errno)" text.
[[noreturn]] void throw_errno(std::string_view what, int err);
[[noreturn]] void throw_errno(std::string_view what);

} // namespace preloadrun
