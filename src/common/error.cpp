#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <cstring>
#include <string>

namespace preloadrun {

namespace {

constexpr bool rows_in_code_order() {
    for (std::size_t i = 0; i < kErrorTable.size(); ++i) {
        if (static_cast<std::size_t>(kErrorTable[i].code) != i) {
            return false;
        }
    }
    return true;
}

constexpr bool wire_values_unique() {
    for (std::size_t i = 0; i < kErrorTable.size(); ++i) {
        for (std::size_t j = i + 1; j < kErrorTable.size(); ++j) {
            if (kErrorTable[i].wire == kErrorTable[j].wire) {
                return false;
            }
        }
    }
    return true;
}

static_assert(rows_in_code_order(), "error_info(code) indexes kErrorTable by code");
static_assert(wire_values_unique(),
              "two error codes share a wire value: the wire would merge them");

} // namespace

std::string_view to_string(ErrorCode code) noexcept {
    if (static_cast<std::size_t>(code) >= kErrorTable.size()) {
        return "unknown error";
    }
    return error_info(code).text;
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
