#include "guard.hpp"

#include "log.hpp"

#include <iterator>

namespace preloadrun::pkcs11 {

namespace {

// The ck_rv column of error_table.def, indexed by code.
constexpr CK_RV kRvOf[] = {
#define PRELOADRUN_ERROR(name, text, wire, retry_local, retry_peer, ck_rv, ...) ck_rv,
#include "preloadrun/common/error_table.def"
#undef PRELOADRUN_ERROR
};
static_assert(std::size(kRvOf) == kErrorCodeCount);

} // namespace

CK_RV to_rv(const Error& error) noexcept {
    const auto index = static_cast<std::size_t>(error.code());
    return index < std::size(kRvOf) ? kRvOf[index] : CKR_GENERAL_ERROR;
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
