#include "core/spawn.hpp"
#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <sys/stat.h>

namespace sv = preloadrun::supervisor;
using preloadrun::Error;
using preloadrun::ErrorCode;

namespace {

void make_file(const std::filesystem::path& path, const std::string& text, mode_t mode) {
    std::ofstream(path) << text;
    REQUIRE(::chmod(path.c_str(), mode) == 0);
}

using testsupport::code_of;

} // namespace

TEST_CASE("resolve_command looks COMMAND up in PATH like execvp") {
    testsupport::TempDir tmp;
    const auto a = tmp / "a";
    const auto b = tmp / "b";
    std::filesystem::create_directories(a);
    std::filesystem::create_directories(b);
    const std::string path = a.string() + ":" + b.string();
    std::string message;

    SUBCASE("the first executable regular file wins") {
        make_file(b / "tool", "#!/bin/sh\n", 0755);
        CHECK(sv::resolve_command("tool", path.c_str()) == (b / "tool").string());
        make_file(a / "tool", "#!/bin/sh\n", 0755);
        CHECK(sv::resolve_command("tool", path.c_str()) == (a / "tool").string());
    }
    SUBCASE("non-executable files and directories are skipped") {
        make_file(a / "tool", "#!/bin/sh\n", 0644);
        std::filesystem::create_directories(a / "dir-tool");
        make_file(b / "tool", "#!/bin/sh\n", 0755);
        CHECK(sv::resolve_command("tool", path.c_str()) == (b / "tool").string());
    }
    SUBCASE("not found: 'command not found'") {
        CHECK(code_of([&] { sv::resolve_command("tool", path.c_str()); }, &message) ==
              ErrorCode::not_found);
        CHECK(message == "tool: command not found");
    }
    SUBCASE("only non-executable candidates: permission denied") {
        make_file(a / "tool", "#!/bin/sh\n", 0644);
        CHECK(code_of([&] { sv::resolve_command("tool", path.c_str()); }, &message) ==
              ErrorCode::permission);
        CHECK(message == "tool: permission denied");
        std::filesystem::create_directories(b / "dir-tool");
        CHECK(code_of([&] { sv::resolve_command("dir-tool", path.c_str()); }, &message) ==
              ErrorCode::permission);
    }
    SUBCASE("a name with a slash is not looked up") {
        const std::string direct = (b / "tool").string();
        make_file(b / "tool", "x", 0755);
        CHECK(sv::resolve_command(direct, "/nonexistent") == direct);
        CHECK(code_of([&] { sv::resolve_command((a / "none").string(), path.c_str()); },
                      &message) == ErrorCode::not_found);
        CHECK(message == (a / "none").string() + ": no such file or directory");
        CHECK(code_of([&] { sv::resolve_command(a.string(), path.c_str()); }, &message) ==
              ErrorCode::permission);
        CHECK(message == a.string() + ": is a directory");
    }
    SUBCASE("no PATH: /bin:/usr/bin") {
        CHECK((sv::resolve_command("sh", nullptr) == "/bin/sh" ||
               sv::resolve_command("sh", nullptr) == "/usr/bin/sh"));
    }
}

TEST_CASE("child_environment adds, overrides and removes variables") {
    ::setenv("PRELOADRUN_TEST_KEEP", "kept", 1);
    ::setenv("PRELOADRUN_TEST_OVERRIDE", "old", 1);
    ::setenv("PRELOADRUN_TEST_REMOVE", "gone", 1);
    sv::ChildSpec spec;
    spec.set_env = {{"PRELOADRUN_TEST_OVERRIDE", "new"}, {"PRELOADRUN_TEST_ADDED", "a=b"}};
    spec.unset_env = {"PRELOADRUN_TEST_REMOVE"};
    const auto env = sv::child_environment(spec);
    auto count = [&env](const std::string& entry) {
        return std::count(env.begin(), env.end(), entry);
    };
    CHECK(count("PRELOADRUN_TEST_KEEP=kept") == 1);
    CHECK(count("PRELOADRUN_TEST_OVERRIDE=new") == 1);
    CHECK(count("PRELOADRUN_TEST_OVERRIDE=old") == 0);
    CHECK(count("PRELOADRUN_TEST_ADDED=a=b") == 1);
    CHECK(std::none_of(env.begin(), env.end(), [](const std::string& e) {
        return e.rfind("PRELOADRUN_TEST_REMOVE=", 0) == 0;
    }));
    ::unsetenv("PRELOADRUN_TEST_KEEP");
    ::unsetenv("PRELOADRUN_TEST_OVERRIDE");
    ::unsetenv("PRELOADRUN_TEST_REMOVE");
}

TEST_CASE("exit_status_for_spawn_error: 127 not found, 126 not executable, else 125") {
    CHECK(sv::exit_status_for_spawn_error(Error(ErrorCode::not_found, "x")) == 127);
    CHECK(sv::exit_status_for_spawn_error(Error(ErrorCode::permission, "x")) == 126);
    CHECK(sv::exit_status_for_spawn_error(Error(ErrorCode::internal, "x")) == 125);
    CHECK(sv::exit_status_for_spawn_error(std::runtime_error("x")) == 125);
}
