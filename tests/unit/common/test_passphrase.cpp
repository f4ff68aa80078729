#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/passphrase.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <unistd.h>

using namespace preloadrun;

TEST_CASE("common::read_passphrase_file") {
    testsupport::TempDir dir;
    auto file = dir / "pass";
    SUBCASE("one trailing newline is removed") {
        write_file_atomic(file, std::string_view("s3cret\n"));
        CHECK(read_passphrase_file(file).view() == "s3cret");
    }
    SUBCASE("CRLF is removed, inner spaces kept") {
        write_file_atomic(file, std::string_view("two words\r\n"));
        CHECK(read_passphrase_file(file).view() == "two words");
    }
    SUBCASE("no newline") {
        write_file_atomic(file, std::string_view("x"));
        CHECK(read_passphrase_file(file).view() == "x");
    }
    SUBCASE("empty is refused") {
        write_file_atomic(file, std::string_view("\n"));
        CHECK_THROWS_AS(read_passphrase_file(file), Error);
    }
    SUBCASE("too long is refused") {
        write_file_atomic(file, std::string(kMaxPassphrase + 5, 'a'));
        CHECK_THROWS_AS(read_passphrase_file(file), Error);
        write_file_atomic(file, std::string(kMaxPassphrase + 1, 'a') + "\n");
        CHECK_THROWS_AS(read_passphrase_file(file), Error);
    }
    SUBCASE("the longest passphrase, with CRLF") {
        write_file_atomic(file, std::string(kMaxPassphrase, 'a') + "\r\n");
        CHECK(read_passphrase_file(file).size() == kMaxPassphrase);
    }
    SUBCASE("missing file") {
        try {
            read_passphrase_file(dir / "missing");
            FAIL("no error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::not_found);
        }
    }
}

TEST_CASE("common::read_passphrase_fd reads one line at a time") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const std::string_view input = "first\nsecond\n";
    REQUIRE(::write(fds[1], input.data(), input.size()) == static_cast<ssize_t>(input.size()));
    ::close(fds[1]);
    CHECK(read_passphrase_fd(fds[0]).view() == "first");
    CHECK(read_passphrase_fd(fds[0]).view() == "second");
    CHECK_THROWS_AS(read_passphrase_fd(fds[0]), Error); // end of input: empty
    ::close(fds[0]);
}
