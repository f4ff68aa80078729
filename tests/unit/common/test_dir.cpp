#include "preloadrun/common/dir.hpp"
#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <filesystem>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

using namespace preloadrun;
namespace fs = std::filesystem;
using testsupport::code_of;
using testsupport::mode_of;

TEST_CASE("common::Dir::open") {
    testsupport::TempDir tmp;
    SUBCASE("a missing directory is not_found") {
        CHECK(code_of([&] { Dir::open(tmp / "missing"); }) == ErrorCode::not_found);
    }
    SUBCASE("a symlink as last component is refused unless followed") {
        fs::create_directory(tmp / "real");
        fs::create_directory_symlink(tmp / "real", tmp / "link");
        CHECK(code_of([&] { Dir::open(tmp / "link"); }) == ErrorCode::permission);
        CHECK(Dir::open(tmp / "link", Dir::LastLink::follow));
    }
    SUBCASE("a symlink to a file is refused as a symlink") {
        Dir::open(tmp.path()).write_atomic("f", std::string_view("x"));
        fs::create_symlink(tmp / "f", tmp / "flink");
        CHECK(code_of([&] { Dir::open(tmp / "flink"); }) == ErrorCode::permission);
    }
    SUBCASE("a regular file is not a directory") {
        Dir::open(tmp.path()).write_atomic("f", std::string_view("x"));
        CHECK(code_of([&] { Dir::open(tmp / "f"); }) == ErrorCode::permission);
    }
    SUBCASE("open_or_create gives the mode exactly, whatever the umask") {
        auto old = ::umask(0077);
        auto dir = Dir::open_or_create(tmp / "new", 0750);
        ::umask(old);
        CHECK(mode_of(tmp / "new") == 0750);
        ::chmod((tmp / "new").c_str(), 0700);
        Dir::open_or_create(tmp / "new", 0755); // exists: keeps its mode
        CHECK(mode_of(tmp / "new") == 0700);
    }
}

TEST_CASE("common::create_directories") {
    testsupport::TempDir tmp;
    auto old = ::umask(0);
    create_directories(tmp / "a" / "b" / "c", 0700);
    ::umask(old);
    CHECK(mode_of(tmp / "a") == 0700);
    CHECK(mode_of(tmp / "a" / "b" / "c") == 0700);
    ::chmod((tmp / "a").c_str(), 0750);
    create_directories(tmp / "a" / "d", 0700); // existing ones keep their mode
    CHECK(mode_of(tmp / "a") == 0750);
    CHECK(mode_of(tmp / "a" / "d") == 0700);
}

TEST_CASE("common::Dir::require") {
    testsupport::TempDir tmp;
    auto dir = Dir::open_or_create(tmp / "d", 0700);
    SUBCASE("owner and mode accepted") {
        dir.require(::geteuid(), 077, "world");
    }
    SUBCASE("another owner refused") {
        CHECK(code_of([&] { dir.require(::geteuid() + 1, 077, "world"); }) ==
              ErrorCode::permission);
    }
    SUBCASE("forbidden bits refused, naming the fix") {
        ::chmod((tmp / "d").c_str(), 0750);
        CHECK(code_of([&] { dir.require(::geteuid(), 077, "world"); }) == ErrorCode::permission);
        dir.require(::geteuid(), 022, "socket directory");
        try {
            dir.require(::geteuid(), 077, "world");
        } catch (const Error& e) {
            CHECK(std::string(e.what()).find("chmod go-rwx") != std::string::npos);
        }
    }
}

TEST_CASE("common::Dir::open_safe") {
    testsupport::TempDir tmp;
    const auto path = tmp / "d";
    Dir::open_or_create(path, 0700);
    const std::string named = "test directory " + path.string();
    std::string message;
    auto open_safe = [&] { Dir::open_safe(path, "test directory"); };

    SUBCASE("the caller's directory that only it may write in is opened") {
        CHECK(Dir::open_safe(path, "test directory").path() == path);
        ::chmod(path.c_str(), 0755); // others may read and search, not write
        CHECK(Dir::open_safe(path, "test directory").path() == path);
    }
    SUBCASE("writable by group or others: refused, naming the mode and the fix") {
        for (const mode_t mode : {0720, 0770, 0702, 0777, 01777}) {
            CAPTURE(mode);
            ::chmod(path.c_str(), mode);
            CHECK(code_of(open_safe, &message) == ErrorCode::permission);
            CHECK(message.starts_with(named + " has mode "));
            CHECK(message.ends_with(": writable by group or others; run chmod go-w on it"));
        }
    }
    SUBCASE("owned by another uid: refused, naming both") {
        if (::geteuid() != 0) {
            MESSAGE("skipped: needs root to give a directory to another uid");
            return;
        }
        REQUIRE(::chown(path.c_str(), 65534, 65534) == 0);
        CHECK(code_of(open_safe, &message) == ErrorCode::permission);
        CHECK(message == named + " is owned by uid 65534, not by uid 0; refused");
    }
    SUBCASE("a symlink, even to a safe directory: refused") {
        fs::rename(path, tmp / "real");
        fs::create_directory_symlink(tmp / "real", path);
        CHECK(code_of(open_safe, &message) == ErrorCode::permission);
        CHECK(message == named + ": is a symbolic link, refused");
    }
    SUBCASE("not a directory: refused") {
        fs::remove(path);
        Dir::open(tmp.path()).write_atomic("d", std::string_view("x"));
        CHECK(code_of(open_safe, &message) == ErrorCode::permission);
        CHECK(message == named + ": not a directory");
    }
    SUBCASE("a missing directory is not_found") {
        fs::remove(path);
        CHECK(code_of(open_safe, &message) == ErrorCode::not_found);
        CHECK(message.starts_with(named + ": "));
    }
}

TEST_CASE("common::Dir entries") {
    testsupport::TempDir tmp;
    auto dir = Dir::open(tmp.path());
    SUBCASE("write_atomic, read, list, remove") {
        dir.write_atomic("a", std::string_view("one"), {.mode = 0640});
        dir.write_atomic("a", std::string_view("two"), {.mode = 0600});
        CHECK(dir.read_text("a", 100) == "two");
        CHECK(mode_of(tmp / "a") == 0600);
        CHECK(dir.list() == std::vector<std::string>{"a"});
        CHECK(dir.remove("a"));
        CHECK_FALSE(dir.remove("a"));
        CHECK(dir.list().empty());
    }
    SUBCASE("operations stay in the directory opened, whatever its path becomes") {
        fs::create_directory(tmp / "mine");
        auto mine = Dir::open(tmp / "mine");
        fs::rename(tmp / "mine", tmp / "moved");
        fs::create_directory(tmp / "mine"); // another directory at the old path
        mine.write_atomic("f", std::string_view("x"));
        CHECK(fs::exists(tmp / "moved" / "f"));
        CHECK_FALSE(fs::exists(tmp / "mine" / "f"));
    }
    SUBCASE("read_secret reads an entry into a SecureBuffer, bounded") {
        dir.write_atomic("world", std::string_view("the key"));
        CHECK(dir.read_secret("world", 7).view() == "the key");
        CHECK(code_of([&] { dir.read_secret("world", 6); }) == ErrorCode::limit);
        CHECK(code_of([&] { dir.read_secret("none", 6); }) == ErrorCode::not_found);
    }
    SUBCASE("symlinked entries are neither read nor followed") {
        dir.write_atomic("target", std::string_view("secret"));
        fs::create_symlink(tmp / "target", tmp / "link");
        CHECK(code_of([&] { dir.read("link", 100); }) == ErrorCode::permission);
        CHECK(code_of([&] { dir.read_secret("link", 100); }) == ErrorCode::permission);
        auto st = dir.stat_entry("link");
        REQUIRE(st);
        CHECK(S_ISLNK(st->st_mode));
        CHECK_FALSE(dir.stat_entry("none"));
    }
    SUBCASE("a name with a slash is refused") {
        CHECK(code_of([&] { dir.read("../x", 10); }) == ErrorCode::internal);
        CHECK(code_of([&] { dir.remove(".."); }) == ErrorCode::internal);
    }
    SUBCASE("fd_path reaches the entry through the descriptor") {
        fs::create_directory(tmp / "s");
        auto sdir = Dir::open(tmp / "s");
        fs::rename(tmp / "s", tmp / "s2");
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        REQUIRE(fd >= 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        auto path = sdir.fd_path("sock");
        std::copy(path.begin(), path.end(), addr.sun_path);
        CHECK(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
        ::close(fd);
        auto st = sdir.stat_entry("sock");
        REQUIRE(st);
        CHECK(S_ISSOCK(st->st_mode));
        CHECK(fs::exists(tmp / "s2" / "sock"));
    }
}
