#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/tokens/liveness.hpp"
#include "sample.hpp"
#include "support/temp_dir.hpp"

#include <csignal>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::tokens;

namespace {
void write_sample(const std::filesystem::path& path, const TokensFile& file) {
    write_file_atomic(path, encode(file));
}
} // namespace

TEST_CASE("tokens::check") {
    testsupport::TempDir dir;
    auto path = dir / "tokens.json";
    auto file = testsupport::sample_tokens_file();

    SUBCASE("missing") {
        CHECK(check(path).status == Status::missing);
    }
    SUBCASE("corrupt") {
        write_file_atomic(path, std::string_view("garbage"));
        auto result = check(path);
        CHECK(result.status == Status::corrupt);
        CHECK(result.reason.find("not valid JSON") != std::string::npos);
    }
    SUBCASE("live while the lock is held, owner dead once released") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        write_sample(path, file);
        auto live = check(path);
        CHECK(live.status == Status::live);
        REQUIRE(live.file);
        CHECK(live.file->generation == 7);
        lock.release_and_remove();
        auto dead = check(path);
        CHECK(dead.status == Status::owner_dead);
        CHECK(dead.reason.find("pid " + std::to_string(::getpid())) != std::string::npos);
    }
    SUBCASE("a lock file left behind but not held means owner dead") {
        { auto lock = OwnerLock::acquire(lock_path_for(path)); }
        write_sample(path, file);
        REQUIRE(std::filesystem::exists(lock_path_for(path)));
        CHECK(check(path).status == Status::owner_dead);
    }
    SUBCASE("an owner killed with SIGKILL is dead") {
        int ready[2];
        REQUIRE(::pipe(ready) == 0);
        pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            auto lock = OwnerLock::acquire(lock_path_for(path));
            auto mine = file;
            mine.owner.process = self_identity();
            write_sample(path, mine);
            (void)::write(ready[1], "x", 1);
            ::pause();
            ::_exit(0);
        }
        char c = 0;
        REQUIRE(::read(ready[0], &c, 1) == 1);
        CHECK(check(path).status == Status::live);
        ::kill(child, SIGKILL);
        ::waitpid(child, nullptr, 0);
        CHECK(check(path).status == Status::owner_dead);
        ::close(ready[0]);
        ::close(ready[1]);
    }
    SUBCASE("another boot") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        file.owner.process.boot_id = "00000000-0000-0000-0000-000000000000";
        write_sample(path, file);
        CHECK(check(path).status == Status::rebooted);
    }
    SUBCASE("another host") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        file.owner.process.hostname = "elsewhere.example";
        write_sample(path, file);
        auto result = check(path);
        CHECK(result.status == Status::other_host);
        CHECK(result.reason.find("elsewhere.example") != std::string::npos);
    }
    SUBCASE("the recorded pid now belongs to another process") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        file.owner.process.start_time += 12345;
        write_sample(path, file);
        CHECK(check(path).status == Status::owner_dead);
    }
    SUBCASE("a symlinked tokens file is not read") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        write_sample(dir / "real.json", file);
        std::filesystem::create_symlink(dir / "real.json", path);
        CHECK(check(path).status == Status::corrupt);
    }
}

TEST_CASE("tokens::OwnerLock") {
    testsupport::TempDir dir;
    auto path = dir / "t.lock";
    auto first = OwnerLock::acquire(path);
    CHECK(first.held());
    SUBCASE("a second owner is refused") {
        try {
            OwnerLock::acquire(path);
            FAIL("acquired twice");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::already_exists);
        }
    }
    SUBCASE("the descriptor is close-on-exec") {
        CHECK((::fcntl(first.fd(), F_GETFD) & FD_CLOEXEC) != 0);
    }
    SUBCASE("release removes the lock file and frees the path") {
        first.release_and_remove();
        CHECK_FALSE(std::filesystem::exists(path));
        auto again = OwnerLock::acquire(path);
        CHECK(again.held());
    }
}
