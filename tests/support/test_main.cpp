#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>

namespace testsupport {

// Whether the test case running now has failed an assertion (used by TempDir
// to keep the directory of a failed test). Only this translation unit sees
// doctest's implementation state.
bool current_test_failed() {
    return doctest::detail::g_cs != nullptr &&
           doctest::detail::g_cs->numAssertsFailedCurrentTest_atomic > 0;
}

} // namespace testsupport
