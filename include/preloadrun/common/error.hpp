#pragma once
// The one family of exceptions used across preloadrun, the PKCS#11 module and
// hsmsim. Low-level code throws preloadrun::Error with a code; each program
// maps codes to its own outcome at exactly one boundary (exit status, CK_RV,
// wire error reply), reading the code's row in error_table.def.

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace preloadrun {

// One enumerator per row of error_table.def, in its order (see there what
// each means).
enum class ErrorCode {
#define PRELOADRUN_ERROR(name, ...) name,
#include "preloadrun/common/error_table.def"
#undef PRELOADRUN_ERROR
};

// Where an error was raised: in this process, or by the peer at the other end
// of a connection, which said so in an error reply (the wire codec sets it).
// "The service said io" (its storage failed) and "io on the socket to the
// service" (the connection broke) are the same code with another origin.
enum class Origin : std::uint8_t { local, peer };

// What a failure says about trying the same request again.
enum class Retry : std::uint8_t {
    final,       // about the request itself: it fails the same way anywhere
    transient,   // this module cannot serve it now: another module, or a later try, may
    module_gone, // the object or the module is gone there (cleared, not usable)
    connection,  // the connection failed or cannot be made: a new one may work, once
                 // the service is back
    protocol,    // the two ends no longer understand each other (a malformed message,
                 // another protocol version): that connection is dropped
};

// A row of error_table.def, but for its CK_RV (the PKCS#11 module reads that
// column itself: this part knows nothing of PKCS#11).
struct ErrorInfo {
    ErrorCode code;
    std::string_view name; // the enumerator: "io"
    std::string_view text; // "I/O error"
    std::uint32_t wire;    // wire.proto's ErrorCode value
    Retry retry_local;
    Retry retry_peer;
    int hsmsim_local;
    int hsmsim_peer;
    int spawn;

    constexpr Retry retry(Origin origin) const noexcept {
        return origin == Origin::peer ? retry_peer : retry_local;
    }
    constexpr int hsmsim_exit(Origin origin) const noexcept {
        return origin == Origin::peer ? hsmsim_peer : hsmsim_local;
    }
};

inline constexpr std::array kErrorTable = {
#define PRELOADRUN_ERROR(name, text, wire, retry_local, retry_peer, ck_rv, hsmsim_local,           \
                         hsmsim_peer, spawn)                                                       \
    ErrorInfo{ErrorCode::name,   #name,        text,        wire, Retry::retry_local,              \
              Retry::retry_peer, hsmsim_local, hsmsim_peer, spawn},
#include "preloadrun/common/error_table.def"
#undef PRELOADRUN_ERROR
};

inline constexpr std::size_t kErrorCodeCount = kErrorTable.size();

// The row of `code` (kErrorTable is indexed by code).
constexpr const ErrorInfo& error_info(ErrorCode code) noexcept {
    return kErrorTable[static_cast<std::size_t>(code)];
}

std::string_view to_string(ErrorCode code) noexcept;

class Error : public std::runtime_error {
public:
    Error(ErrorCode code, const std::string& message, Origin origin = Origin::local)
        : std::runtime_error(message), code_(code), origin_(origin) {}
    // The same error (code and origin) told with another message: for a
    // caller that adds context.
    Error(const Error& cause, const std::string& message)
        : std::runtime_error(message), code_(cause.code_), origin_(cause.origin_) {}

    ErrorCode code() const noexcept { return code_; }
    Origin origin() const noexcept { return origin_; }
    // What this error says about trying again, given where it came from.
    Retry retry() const noexcept { return error_info(code_).retry(origin_); }

private:
    ErrorCode code_;
    Origin origin_;
};

// Throws Error(io) with "what: strerror(errno)" text.
[[noreturn]] void throw_errno(std::string_view what, int err);
[[noreturn]] void throw_errno(std::string_view what);

} // namespace preloadrun
