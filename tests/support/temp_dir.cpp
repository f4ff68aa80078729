#include "support/temp_dir.hpp"

#include <cerrno>
#include <cstdlib>
#include <doctest/doctest.h>
#include <exception>
#include <iostream>
#include <string>
#include <sys/stat.h>
#include <system_error>

namespace testsupport {

mode_t mode_of(const std::filesystem::path& p) {
    struct stat st {};
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    return st.st_mode & 07777;
}

bool current_test_failed(); // test_main.cpp

TempDir::TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "preloadrun-test-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
        throw std::system_error(errno, std::generic_category(), "mkdtemp");
    }
    path_ = pattern;
}

TempDir::~TempDir() {
    if (current_test_failed() || std::uncaught_exceptions() > 0) {
        std::cerr << "test failed: keeping " << path_ << "\n";
        return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

} // namespace testsupport
