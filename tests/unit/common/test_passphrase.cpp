#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/common/log.hpp"
#include "preloadrun/common/passphrase.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sstream>
#include <sys/stat.h>
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
    SUBCASE("one line ending only: a second one, or a lone CR, is the passphrase's") {
        write_file_atomic(file, std::string_view("abc\r\n\r\n"));
        CHECK(read_passphrase_file(file).view() == "abc\r\n");
        write_file_atomic(file, std::string_view("abc\n\n"));
        CHECK(read_passphrase_file(file).view() == "abc\n");
        write_file_atomic(file, std::string_view("abc\r"));
        CHECK(read_passphrase_file(file).view() == "abc\r");
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

TEST_CASE("common::read_passphrase_file checks the file it reaches") {
    testsupport::TempDir dir;
    auto file = dir / "pass";
    using testsupport::code_of;
    SUBCASE("a symbolic link is followed (secrets mounted as links)") {
        // As Kubernetes mounts a secret: pass -> ..data/pass, ..data -> a directory.
        std::filesystem::create_directory(dir / "v1");
        write_file_atomic(dir / "v1" / "pass", std::string_view("mounted\n"));
        std::filesystem::create_directory_symlink(dir / "v1", dir / "..data");
        std::filesystem::create_symlink(dir / "..data" / "pass", file);
        CHECK(read_passphrase_file(file).view() == "mounted");
    }
    SUBCASE("writable by group or others: refused, also through a link") {
        write_file_atomic(dir / "target", std::string_view("s3cret\n"));
        std::filesystem::create_symlink(dir / "target", file);
        for (mode_t mode : {0620, 0602, 0666}) {
            CAPTURE(mode);
            REQUIRE(::chmod((dir / "target").c_str(), mode) == 0);
            std::string message;
            CHECK(code_of([&] { read_passphrase_file(file); }, &message) == ErrorCode::permission);
            CHECK(message.find("writable by group or others") != std::string::npos);
            CHECK(message.find(file.string()) != std::string::npos);
        }
    }
    SUBCASE("another user's file: refused; root's: read") {
        if (::geteuid() != 0) {
            MESSAGE("needs root to give a file to another user");
            return;
        }
        write_file_atomic(file, std::string_view("s3cret\n"));
        REQUIRE(::chown(file.c_str(), 2000, 2000) == 0);
        std::string message;
        CHECK(code_of([&] { read_passphrase_file(file); }, &message) == ErrorCode::permission);
        CHECK(message.find("belongs to uid 2000") != std::string::npos);
        REQUIRE(::chown(file.c_str(), 0, 0) == 0);
        CHECK(read_passphrase_file(file).view() == "s3cret");
    }
    SUBCASE("readable by others: read, with one warning") {
        std::ostringstream out;
        log::use_sink(std::make_shared<spdlog::sinks::ostream_sink_mt>(out), spdlog::level::warn);
        write_file_atomic(file, std::string_view("s3cret\n"));
        CHECK(read_passphrase_file(file).view() == "s3cret");
        CHECK(out.str().empty()); // 0600
        REQUIRE(::chmod(file.c_str(), 0640) == 0);
        CHECK(read_passphrase_file(file).view() == "s3cret");
        CHECK(out.str().empty()); // its group may read it: no warning
        REQUIRE(::chmod(file.c_str(), 0644) == 0);
        CHECK(read_passphrase_file(file).view() == "s3cret");
        log::use_sink(std::make_shared<spdlog::sinks::null_sink_mt>(), spdlog::level::off);
        const auto text = out.str();
        CHECK(text.find("readable by others (mode 0644)") != std::string::npos);
        CHECK(text.find(file.string()) != std::string::npos);
        CHECK(std::count(text.begin(), text.end(), '\n') == 1);
        CHECK(text.find("s3cret") == std::string::npos);
    }
    SUBCASE("not a regular file: refused") {
        std::filesystem::create_directory(file);
        CHECK_THROWS_AS(read_passphrase_file(file), Error);
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

TEST_CASE("common::read_passphrase_fd: the same line endings and limit as a file") {
    auto read_one = [](const std::string& input) {
        int fds[2];
        REQUIRE(::pipe(fds) == 0);
        REQUIRE(::write(fds[1], input.data(), input.size()) == static_cast<ssize_t>(input.size()));
        ::close(fds[1]);
        std::string got;
        try {
            got = std::string(read_passphrase_fd(fds[0]).view());
        } catch (const Error& e) {
            got = "error: " + std::string(e.what());
        }
        ::close(fds[0]);
        return got;
    };
    CHECK(read_one("abc\r\n") == "abc");
    CHECK(read_one("abc\n") == "abc");
    // A lone CR, before the end of the input or not, is the passphrase's.
    CHECK(read_one("abc\r") == "abc\r");
    CHECK(read_one("abc\r\r\n") == "abc\r");
    // The longest passphrase, also with CRLF.
    const std::string longest(kMaxPassphrase, 'a');
    CHECK(read_one(longest + "\n") == longest);
    CHECK(read_one(longest + "\r\n") == longest);
    CHECK(read_one(longest) == longest);
    CHECK(read_one(longest + "a\n").find("longer than") != std::string::npos);
    CHECK(read_one(longest + "a\r\n").find("longer than") != std::string::npos);
    CHECK(read_one(longest + "\r").find("longer than") != std::string::npos);
}
