#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <filesystem>
#include <functional>
#include <sys/stat.h>
#include <unistd.h>

using namespace preloadrun;
namespace fs = std::filesystem;

namespace {
using testsupport::code_of;
using testsupport::mode_of;
} // namespace

TEST_CASE("common::write_file_atomic") {
    testsupport::TempDir dir;
    auto path = dir / "file";
    SUBCASE("creates with the requested mode whatever the umask") {
        auto old = ::umask(0);
        write_file_atomic(path, std::string_view("hello"), {.mode = 0640});
        ::umask(old);
        CHECK(read_text_file(path) == "hello");
        CHECK(mode_of(path) == 0640);
    }
    SUBCASE("replaces and leaves no temporary file") {
        write_file_atomic(path, std::string_view("one"));
        write_file_atomic(path, std::string_view("two"));
        CHECK(read_text_file(path) == "two");
        CHECK(mode_of(path) == 0600);
        int entries = 0;
        for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) {
            ++entries;
        }
        CHECK(entries == 1);
    }
    SUBCASE("a missing directory is an I/O error and leaves nothing") {
        CHECK(code_of([&] { write_file_atomic(dir / "nope" / "f", std::string_view("x")); }) ==
              ErrorCode::io);
        CHECK_FALSE(fs::exists(dir / "nope"));
    }
}

TEST_CASE("common::read_file") {
    testsupport::TempDir dir;
    SUBCASE("missing file is not_found") {
        CHECK(code_of([&] { read_file(dir / "missing"); }) == ErrorCode::not_found);
    }
    SUBCASE("a symlink is refused") {
        write_file_atomic(dir / "target", std::string_view("x"));
        fs::create_symlink(dir / "target", dir / "link");
        CHECK(code_of([&] { read_file(dir / "link"); }) == ErrorCode::permission);
    }
    SUBCASE("a directory is not a regular file") {
        CHECK(code_of([&] { read_file(dir.path()); }) == ErrorCode::io);
    }
    SUBCASE("size limit") {
        write_file_atomic(dir / "big", std::string(100, 'a'));
        CHECK(read_file(dir / "big", 100).size() == 100);
        CHECK(code_of([&] { read_file(dir / "big", 99); }) == ErrorCode::limit);
    }
}

TEST_CASE("common::read_secret_file") {
    testsupport::TempDir dir;
    SUBCASE("the contents, exactly, in a SecureBuffer") {
        write_file_atomic(dir / "key", std::string_view("k3y\n\0bytes", 10));
        const SecureBuffer secret = read_secret_file(dir / "key", 100);
        CHECK(secret.view() == std::string_view("k3y\n\0bytes", 10));
    }
    SUBCASE("an empty file is an empty secret") {
        write_file_atomic(dir / "empty", std::string_view(""));
        CHECK(read_secret_file(dir / "empty", 100).empty());
    }
    SUBCASE("size limit: exactly max_size is read, one byte more refused") {
        write_file_atomic(dir / "big", std::string(100, 'a'));
        CHECK(read_secret_file(dir / "big", 100).size() == 100);
        CHECK(code_of([&] { read_secret_file(dir / "big", 99); }) == ErrorCode::limit);
    }
    SUBCASE("the checks of read_file") {
        CHECK(code_of([&] { read_secret_file(dir / "missing", 10); }) == ErrorCode::not_found);
        write_file_atomic(dir / "target", std::string_view("x"));
        fs::create_symlink(dir / "target", dir / "link");
        CHECK(code_of([&] { read_secret_file(dir / "link", 10); }) == ErrorCode::permission);
        CHECK(code_of([&] { read_secret_file(dir.path(), 10); }) == ErrorCode::io);
        REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
        CHECK(code_of([&] { read_secret_file(dir / "fifo", 10); }) == ErrorCode::io);
    }
}

TEST_CASE("common::ensure_private_dir") {
    testsupport::TempDir dir;
    SUBCASE("creates a 0700 directory") {
        auto old = ::umask(0);
        ensure_private_dir(dir / "private");
        ::umask(old);
        CHECK(mode_of(dir / "private") == 0700);
    }
    SUBCASE("accepts an existing private directory") {
        ensure_private_dir(dir / "p");
        ensure_private_dir(dir / "p");
    }
    SUBCASE("refuses a group- or world-writable directory, naming it") {
        fs::create_directory(dir / "open");
        ::chmod((dir / "open").c_str(), 0777);
        CHECK(code_of([&] { ensure_private_dir(dir / "open"); }) == ErrorCode::permission);
        ::chmod((dir / "open").c_str(), 0770);
        std::string message;
        CHECK(code_of([&] { ensure_private_dir(dir / "open", "runtime directory"); }, &message) ==
              ErrorCode::permission);
        CHECK(message == "runtime directory " + (dir / "open").string() +
                             " has mode 0770: writable by group or others; run chmod go-w on it");
    }
    SUBCASE("refuses a directory of another user") {
        if (::geteuid() != 0) {
            MESSAGE("skipped: needs root to give a directory to another uid");
            return;
        }
        fs::create_directory(dir / "theirs");
        ::chmod((dir / "theirs").c_str(), 0700);
        REQUIRE(::chown((dir / "theirs").c_str(), 65534, 65534) == 0);
        CHECK(code_of([&] { ensure_private_dir(dir / "theirs"); }) == ErrorCode::permission);
    }
    SUBCASE("refuses a symlink to a directory") {
        fs::create_directory(dir / "real");
        ::chmod((dir / "real").c_str(), 0700);
        fs::create_directory_symlink(dir / "real", dir / "link");
        CHECK(code_of([&] { ensure_private_dir(dir / "link"); }) == ErrorCode::permission);
    }
    SUBCASE("refuses a regular file") {
        write_file_atomic(dir / "file", std::string_view("x"));
        CHECK(code_of([&] { ensure_private_dir(dir / "file"); }) == ErrorCode::permission);
    }
}
