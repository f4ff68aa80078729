#pragma once
// hsmsim's OpenSSL helpers: the owning pointers of preloadrun/common/ossl.hpp
// (ossl::Pkey, ...), and the one helper that turns OpenSSL's error queue
// into a preloadrun::Error.

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/ossl.hpp"

#include <string_view>

namespace preloadrun::sim::ossl {

using namespace preloadrun::ossl;

// Throws Error(code) with "what: <OpenSSL's first queued error>", and empties
// this thread's OpenSSL error queue.
[[noreturn]] void fail(ErrorCode code, std::string_view what);

// Empties this thread's OpenSSL error queue (after an expected failure).
void clear_errors() noexcept;

} // namespace preloadrun::sim::ossl
