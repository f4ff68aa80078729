#pragma once
// Which preloadrun::Error a call throws, for CHECKs on error codes.

#include "preloadrun/common/error.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <string>

namespace testsupport {

// The code of the preloadrun::Error that `fn` throws; fails the test when it
// throws none. `message`, when given, receives the error's text.
inline preloadrun::ErrorCode code_of(const std::function<void()>& fn,
                                     std::string* message = nullptr) {
    try {
        fn();
    } catch (const preloadrun::Error& e) {
        if (message != nullptr) {
            *message = e.what();
        }
        return e.code();
    }
    FAIL("no preloadrun::Error thrown");
    return preloadrun::ErrorCode::internal;
}

} // namespace testsupport
