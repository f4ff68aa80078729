#include "preloadrun/common/error.hpp"
#include "preloadrun/common/files.hpp"
#include "preloadrun/tokens/liveness.hpp"
#include "preloadrun/tokens/publisher.hpp"
#include "sample.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <csignal>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <functional>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::tokens;

namespace {
void write_sample(const std::filesystem::path& path, const TokensFile& file) {
    write_file_atomic(path, encode(file));
}

constexpr uid_t kReader = 2000; // another local user, in group kGroup when asked
constexpr gid_t kGroup = 2002;
using testsupport::mode_of;

// Runs `fn` in a child as uid/gid kReader (with kGroup as its one
// supplementary group when `in_group`); returns what it returned.
std::string as_reader(bool in_group, const std::function<std::string()>& fn) {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(out[0]);
        const gid_t groups[] = {kGroup};
        if (::setgroups(in_group ? 1 : 0, groups) != 0 ||
            ::setresgid(kReader, kReader, kReader) != 0 ||
            ::setresuid(kReader, kReader, kReader) != 0) {
            ::_exit(1);
        }
        const auto text = fn();
        (void)!::write(out[1], text.data(), text.size());
        ::_exit(0);
    }
    ::close(out[1]);
    std::string text;
    char buf[512];
    ssize_t n = 0;
    while ((n = ::read(out[0], buf, sizeof buf)) > 0) {
        text.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    int status = 0;
    ::waitpid(child, &status, 0);
    REQUIRE(WIFEXITED(status));
    REQUIRE(WEXITSTATUS(status) == 0);
    return text;
}

std::string status_and_reason(const std::filesystem::path& path) {
    auto result = check(path);
    return std::string(to_string(result.status)) + ": " + result.reason;
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
        auto result = check(path);
        CHECK(to_string(result.status) == "unsafe");
        CHECK(result.reason.find("symbolic link") != std::string::npos);
    }
    SUBCASE("a tokens file writable by group or others is unsafe, as preloadrun would refuse it") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        write_sample(path, file);
        for (mode_t mode : {0666, 0646, 0660}) {
            CAPTURE(mode);
            REQUIRE(::chmod(path.c_str(), mode) == 0);
            auto result = check(path);
            CHECK(to_string(result.status) == "unsafe");
            CHECK_FALSE(result.file);
            CHECK(result.reason.find("writable by") != std::string::npos);
        }
        REQUIRE(::chmod(path.c_str(), 0644) == 0);
        CHECK(check(path).status == Status::live);
    }
    SUBCASE("a tokens file in a directory writable by group or others is unsafe") {
        auto lock = OwnerLock::acquire(lock_path_for(path));
        write_sample(path, file);
        REQUIRE(::chmod(dir.path().c_str(), 01777) == 0);
        auto result = check(path);
        CHECK(to_string(result.status) == "unsafe");
        CHECK(result.reason.find("directory") != std::string::npos);
        REQUIRE(::chmod(dir.path().c_str(), 0700) == 0);
    }
}

TEST_CASE("tokens::check as another user (as root)") {
    if (::geteuid() != 0) {
        MESSAGE("needs root to check as another uid");
        return;
    }
    testsupport::TempDir dir;
    // The directory as preloadrun --group needs it: reachable by the group,
    // writable by its owner only.
    REQUIRE(::chown(dir.path().c_str(), 0, kGroup) == 0);
    REQUIRE(::chmod(dir.path().c_str(), 0750) == 0);
    auto path = dir / "tokens.json";
    const auto lock_path = lock_path_for(path);
    auto file = testsupport::sample_tokens_file();

    SUBCASE("a file published for the group: a member sees the owner live") {
        Publisher owner(path, {kGroup});
        owner.publish(file);
        CHECK(mode_of(lock_path) == 0640);
        CHECK(as_reader(true, [&] { return status_and_reason(path); }).starts_with("live: "));
    }
    SUBCASE("a member can neither write the lock nor lock it while the owner lives") {
        Publisher owner(path, {kGroup});
        owner.publish(file);
        auto seen = as_reader(true, [&] {
            std::string out;
            out += ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC) < 0 && errno == EACCES
                       ? "no-write "
                       : "WRITE ";
            int fd = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);
            struct flock read_lock {};
            read_lock.l_type = F_RDLCK;
            read_lock.l_whence = SEEK_SET;
            if (fd < 0) {
                return out + "no-open";
            }
            out +=
                ::fcntl(fd, F_OFD_SETLK, &read_lock) != 0 && errno == EAGAIN ? "no-lock" : "LOCK";
            return out;
        });
        CHECK(seen == "no-write no-lock");
        CHECK(check(path).status == Status::live);
    }
    SUBCASE("a lock this user may not open is 'cannot check', never 'owner dead'") {
        write_file_atomic(path, encode(file), AtomicWriteOptions{0640, kGroup, false});
        auto lock = OwnerLock::acquire(lock_path); // 0600, no group
        auto seen = as_reader(true, [&] { return status_and_reason(path); });
        CHECK(seen.starts_with("cannot check: "));
        CHECK(seen.find("Permission denied") != std::string::npos);
        CHECK(seen.find("--group") != std::string::npos);
        CHECK(seen.find("is gone") == std::string::npos);
    }
    SUBCASE("a tokens file this user may not read is 'cannot check', not 'corrupt'") {
        Publisher owner(path, {kGroup});
        owner.publish(file);
        auto seen = as_reader(false, [&] { return status_and_reason(path); });
        CHECK(seen.starts_with("cannot check: "));
        CHECK(seen.find("Permission denied") != std::string::npos);
        CHECK(seen.find("uid 2000") != std::string::npos);
    }
    SUBCASE("a member may lock a dead owner's lock file: the owner is still dead, and a new "
            "owner is told why it cannot take the path") {
        // What a dead owner run with --group leaves behind.
        write_file_atomic(path, encode(file), AtomicWriteOptions{0640, kGroup, false});
        { auto lock = OwnerLock::acquire(lock_path); }
        REQUIRE(::chown(lock_path.c_str(), 0, kGroup) == 0);
        REQUIRE(::chmod(lock_path.c_str(), 0640) == 0);
        int ready[2];
        int hold[2];
        REQUIRE(::pipe(ready) == 0);
        REQUIRE(::pipe(hold) == 0);
        pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(ready[0]);
            ::close(hold[1]);
            const gid_t groups[] = {kGroup};
            int fd = -1;
            struct flock read_lock {};
            read_lock.l_type = F_RDLCK;
            read_lock.l_whence = SEEK_SET;
            if (::setgroups(1, groups) != 0 || ::setresgid(kReader, kReader, kReader) != 0 ||
                ::setresuid(kReader, kReader, kReader) != 0 ||
                (fd = ::open(lock_path.c_str(), O_RDONLY)) < 0 ||
                ::fcntl(fd, F_OFD_SETLK, &read_lock) != 0) {
                ::_exit(1);
            }
            (void)!::write(ready[1], "x", 1);
            char c;
            (void)!::read(hold[0], &c, 1);
            ::_exit(0);
        }
        ::close(ready[1]);
        ::close(hold[0]);
        char c = 0;
        REQUIRE(::read(ready[0], &c, 1) == 1);
        auto result = check(path);
        CHECK(result.status == Status::owner_dead);
        CHECK(result.reason.find("read-locked") != std::string::npos);
        std::string message;
        CHECK(testsupport::code_of([&] { OwnerLock::acquire(lock_path); }, &message) ==
              ErrorCode::conflict);
        CHECK(message.find("not a preloadrun") != std::string::npos);
        ::close(hold[1]);
        ::close(ready[0]);
        ::waitpid(child, nullptr, 0);
        CHECK(OwnerLock::acquire(lock_path).held());
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
