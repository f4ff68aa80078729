#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/tokens/publisher.hpp"
#include "sample.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <atomic>
#include <cstdlib>
#include <doctest/doctest.h>
#include <functional>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <thread>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::tokens;

namespace {
using testsupport::code_of;
using testsupport::mode_of;
} // namespace

TEST_CASE("tokens::Publisher") {
    testsupport::TempDir dir;
    ::chmod(dir.path().c_str(), 0700);
    auto path = dir / "tokens.json";
    auto file = testsupport::sample_tokens_file();

    SUBCASE("publishes 0600, generation counts up, remove cleans both files") {
        Publisher publisher(path);
        publisher.publish(file);
        CHECK(file.generation == 1);
        publisher.publish(file);
        CHECK(file.generation == 2);
        CHECK(mode_of(path) == 0600);
        CHECK(decode(read_text_file(path)).generation == 2);
        CHECK(check(path).status == Status::live);
        publisher.remove();
        CHECK_FALSE(std::filesystem::exists(path));
        CHECK_FALSE(std::filesystem::exists(lock_path_for(path)));
    }
    SUBCASE("with a group: the file and its lock get mode 0640 and that group") {
        // Readers in the group test the lock: they must be able to open it.
        const gid_t group = ::getegid() == 0 ? 2002 : ::getegid();
        {
            Publisher publisher(path, {group});
            publisher.publish(file);
            for (const auto& p : {path, lock_path_for(path)}) {
                CAPTURE(p);
                struct stat st {};
                REQUIRE(::stat(p.c_str(), &st) == 0);
                CHECK((st.st_mode & 07777) == 0640);
                CHECK(st.st_gid == group);
            }
            // As a dead owner would leave it: the lock file stays.
            REQUIRE(::link(lock_path_for(path).c_str(), (dir / "kept.lock").c_str()) == 0);
        }
        std::filesystem::rename(dir / "kept.lock", lock_path_for(path));
        Publisher without_group(path);
        CHECK(mode_of(lock_path_for(path)) == 0600);
    }
    SUBCASE("a path held by a live owner is refused, naming its pid") {
        Publisher first(path);
        first.publish(file);
        try {
            Publisher second(path);
            FAIL("second publisher accepted");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::already_exists);
            CHECK(std::string(e.what()).find("pid " + std::to_string(::getpid())) !=
                  std::string::npos);
        }
        CHECK(check(path).status == Status::live);
    }
    SUBCASE("a stale file is taken over and its generation continued") {
        file.generation = 41;
        write_file_atomic(path, encode(file));
        Publisher publisher(path);
        REQUIRE(publisher.taken_over());
        CHECK(publisher.taken_over()->status == Status::owner_dead);
        publisher.publish(file);
        CHECK(file.generation == 42);
    }
    SUBCASE("a group-writable or world-writable directory is refused") {
        std::string message;
        ::chmod(dir.path().c_str(), 0770);
        CHECK(code_of([&] { Publisher p(path); }, &message) == ErrorCode::permission);
        CHECK(message == "tokens file directory " + dir.path().string() +
                             " has mode 0770: writable by group or others; run chmod go-w on it");
        ::chmod(dir.path().c_str(), 0777);
        CHECK(code_of([&] { Publisher p(path); }) == ErrorCode::permission);
        ::chmod(dir.path().c_str(), 0700);
        CHECK(!std::filesystem::exists(path));
    }
    SUBCASE("a directory of another user is refused") {
        if (::geteuid() != 0) {
            MESSAGE("skipped: needs root to give a directory to another uid");
            return;
        }
        std::filesystem::create_directory(dir / "theirs");
        ::chmod((dir / "theirs").c_str(), 0700);
        REQUIRE(::chown((dir / "theirs").c_str(), 65534, 65534) == 0);
        std::string message;
        CHECK(code_of([&] { Publisher p(dir / "theirs" / "tokens.json"); }, &message) ==
              ErrorCode::permission);
        CHECK(message == "tokens file directory " + (dir / "theirs").string() +
                             " is owned by uid 65534, not by uid 0; refused");
        CHECK(std::filesystem::is_empty(dir / "theirs"));
    }
    SUBCASE("a missing directory is refused, naming the fix") {
        std::string message;
        CHECK(code_of([&] { Publisher p(dir / "missing" / "tokens.json"); }, &message) ==
              ErrorCode::not_found);
        CHECK(message.find("does not exist; create it (mkdir -m 700)") != std::string::npos);
    }
    SUBCASE("a symlink at the path is refused") {
        write_file_atomic(dir / "elsewhere", std::string_view("x"));
        std::filesystem::create_symlink(dir / "elsewhere", path);
        CHECK(code_of([&] { Publisher p(path); }) == ErrorCode::permission);
    }
    SUBCASE("a symlinked directory is refused") {
        std::filesystem::create_directory(dir / "real");
        ::chmod((dir / "real").c_str(), 0700);
        std::filesystem::create_directory_symlink(dir / "real", dir / "link");
        CHECK(code_of([&] { Publisher p(dir / "link" / "tokens.json"); }) == ErrorCode::permission);
    }
    SUBCASE("a directory swapped after the check changes nothing") {
        // As root in a directory whose parent another user owns: that user
        // can rename the checked directory away and put their own (or a
        // symlink) in its place. Everything stays in the directory checked.
        std::filesystem::create_directory(dir / "d");
        ::chmod((dir / "d").c_str(), 0700);
        Publisher publisher(dir / "d" / "tokens.json");
        std::filesystem::rename(dir / "d", dir / "checked");
        std::filesystem::create_directory(dir / "elsewhere");
        std::filesystem::create_directory_symlink(dir / "elsewhere", dir / "d");
        publisher.publish(file);
        CHECK(std::filesystem::exists(dir / "checked" / "tokens.json"));
        CHECK(std::filesystem::exists(dir / "checked" / "tokens.json.lock"));
        CHECK(std::filesystem::is_empty(dir / "elsewhere"));
        publisher.remove();
        CHECK(std::filesystem::is_empty(dir / "checked"));
    }
    SUBCASE("a reader polling during 1000 rewrites never sees a partial file") {
        Publisher publisher(path);
        publisher.publish(file);
        std::atomic<bool> done{false};
        std::atomic<int> reads{0};
        std::atomic<int> bad{0};
        std::thread reader([&] {
            while (!done) {
                try {
                    decode(read_text_file(path));
                    ++reads;
                } catch (const Error&) {
                    ++bad;
                }
            }
        });
        for (int i = 0; i < 1000; ++i) {
            file.tokens[0].loaded[0].handle = static_cast<std::uint64_t>(100 + i);
            publisher.publish(file);
        }
        done = true;
        reader.join();
        CHECK(bad == 0);
        CHECK(reads > 0);
        CHECK(file.generation == 1001);
    }
}

TEST_CASE("tokens::new_instance_id") {
    auto a = new_instance_id();
    auto b = new_instance_id();
    CHECK(a.size() == 32);
    CHECK(a != b);
}

TEST_CASE("tokens::default_directory") {
    testsupport::TempDir dir;
    const char* saved = std::getenv("XDG_RUNTIME_DIR");
    const std::string old = saved != nullptr ? saved : "";
    ::setenv("XDG_RUNTIME_DIR", dir.path().c_str(), 1);
    const auto expected = dir / "preloadrun";
    SUBCASE("made private in XDG_RUNTIME_DIR") {
        CHECK(default_directory() == expected);
        CHECK(mode_of(expected) == 0700);
    }
    SUBCASE("one others may write in is refused, named as the tokens file directory") {
        std::filesystem::create_directory(expected);
        ::chmod(expected.c_str(), 0777);
        std::string message;
        CHECK(code_of([] { default_directory(); }, &message) == ErrorCode::permission);
        CHECK(message == "tokens file directory " + expected.string() +
                             " has mode 0777: writable by group or others; run chmod go-w on it");
    }
    if (saved != nullptr) {
        ::setenv("XDG_RUNTIME_DIR", old.c_str(), 1);
    } else {
        ::unsetenv("XDG_RUNTIME_DIR");
    }
}

TEST_CASE("tokens::Publisher syncs to storage, not in memory") {
    testsupport::TempDir on_disk; // under the build's temporary directory
    ::chmod(on_disk.path().c_str(), 0700);
    auto file = testsupport::sample_tokens_file();
    struct statfs fs {};
    REQUIRE(::statfs(on_disk.path().c_str(), &fs) == 0);
    {
        Publisher publisher(on_disk / "tokens.json");
        CHECK(publisher.syncs() == (fs.f_type != TMPFS_MAGIC));
        publisher.publish(file);
    }
    const std::filesystem::path shm = "/dev/shm";
    if (::statfs(shm.c_str(), &fs) == 0 && fs.f_type == TMPFS_MAGIC) {
        auto dir = shm / ("preloadrun-test-" + std::to_string(::getpid()));
        std::filesystem::create_directory(dir);
        ::chmod(dir.c_str(), 0700);
        {
            Publisher publisher(dir / "tokens.json");
            CHECK_FALSE(publisher.syncs());
            publisher.publish(file);
            CHECK(std::filesystem::exists(dir / "tokens.json"));
        }
        std::filesystem::remove_all(dir);
    }
}
