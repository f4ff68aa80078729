#include "member/fleet_config.hpp"
#include "preloadrun/common/error.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <fstream>
#include <string>
#include <sys/stat.h>

using namespace preloadrun;
using namespace preloadrun::sim::member;
using testsupport::code_of;

namespace {

constexpr const char* kGood = R"(# two members, one set
[defaults]
library = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
timeout = "3s"
env = { SHARED = "1" }

[member.left]
token = { label = "signing" }
env = { P11_KIT_SERVER_ADDRESS = "unix:path=/run/left.sock" }

[member.right]
library = "/opt/vendor/libv.so"
token = { serial = "0123" }
timeout = "250ms"
max-sessions = 8
probe-interval = "1m"
env = { SHARED = "2" }

[member.spare]
token = { slot = 3 }

[set.signing]
members = ["left", "right"]
)";

// The message of the Error(usage) that parsing `text` throws.
std::string refusal(const std::string& text) {
    try {
        parse_fleet_config(text, "f.toml");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::usage);
        return e.what();
    }
    FAIL("parsed: " << text);
    return {};
}

const std::string kMember = "[member.a]\nlibrary = \"/l.so\"\ntoken = { label = \"t\" }\n";
const std::string kSet = "[set.s]\nmembers = [\"a\"]\n";

} // namespace

TEST_CASE("member::parse_fleet_config reads members, defaults and sets") {
    auto c = parse_fleet_config(kGood, "f.toml");
    REQUIRE(c.members.size() == 3);
    const auto& left = c.members[0];
    CHECK(left.name == "left");
    CHECK(left.library == "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so");
    CHECK(left.token.label == "signing");
    CHECK(left.timeout == std::chrono::seconds(3));
    CHECK(left.max_sessions == kDefaultSessions);
    CHECK(left.probe_interval == kDefaultProbeInterval);
    CHECK(left.env == std::vector<std::pair<std::string, std::string>>{
                          {"SHARED", "1"}, {"P11_KIT_SERVER_ADDRESS", "unix:path=/run/left.sock"}});
    const auto& right = c.members[1];
    CHECK(right.library == "/opt/vendor/libv.so");
    CHECK(right.token.serial == "0123");
    CHECK(right.timeout == std::chrono::milliseconds(250));
    CHECK(right.max_sessions == 8);
    CHECK(right.probe_interval == std::chrono::minutes(1));
    CHECK(right.env == std::vector<std::pair<std::string, std::string>>{{"SHARED", "2"}});
    CHECK(c.members[2].token.slot == 3u);
    REQUIRE(c.sets.size() == 1);
    CHECK(c.sets[0].members == std::vector<std::string>{"left", "right"});
    CHECK(c.set_of("right")->name == "signing");
    CHECK(c.set_of("spare") == nullptr);
    CHECK(c.member("nobody") == nullptr);
}

TEST_CASE("member::parse_fleet_config refuses what is wrong, naming the file and the line") {
    CHECK(refusal("[member.a\n").rfind("f.toml:1: ", 0) == 0);
    CHECK(refusal(kSet) == "f.toml: no [member.NAME] table: the fleet has no member");
    CHECK(refusal(kMember).find("no [set.NAME] table") != std::string::npos);
    CHECK(refusal(kMember + kSet + "[extra]\n").find("unknown key \"extra\" in the file") !=
          std::string::npos);
    auto typo = refusal(kMember + "timeuot = \"1s\"\n" + kSet);
    CHECK(typo.rfind("f.toml:4: unknown key \"timeuot\" in member a", 0) == 0);
    CHECK(refusal("[member.a]\ntoken = { label = \"t\" }\n" + kSet) ==
          "f.toml:1: member a has no library (nor does [defaults])");
    CHECK(refusal("[member.a]\nlibrary = \"l.so\"\ntoken = { label = \"t\" }\n" + kSet)
              .find("library must be an absolute path") != std::string::npos);
    CHECK(refusal("[member.a]\nlibrary = \"/l.so\"\n" + kSet).find("has no token") !=
          std::string::npos);
    CHECK(refusal("[member.a]\nlibrary = \"/l.so\"\ntoken = { label = \"t\", slot = 1 }\n" + kSet)
              .find("token takes one of label, serial or slot") != std::string::npos);
    CHECK(refusal(kMember + "timeout = \"5\"\n" + kSet).find("timeout") != std::string::npos);
    CHECK(refusal(kMember + "timeout = \"20m\"\n" + kSet).find("100ms to 10m") !=
          std::string::npos);
    CHECK(refusal(kMember + "max-sessions = 0\n" + kSet).find("from 1 to 64") != std::string::npos);
    CHECK(refusal(kMember + "env = { \"1X\" = \"v\" }\n" + kSet).find("not a variable name") !=
          std::string::npos);
    CHECK(refusal(kMember + "[set.s]\nmembers = [\"b\"]\n").find("names member b, which is not") !=
          std::string::npos);
    CHECK(refusal(kMember + "[set.s]\nmembers = []\n").find("needs members") != std::string::npos);
    CHECK(refusal(kMember + kSet + "[set.t]\nmembers = [\"a\"]\n").find("is in two sets") !=
          std::string::npos);
    CHECK(refusal("[member.\"a b\"]\nlibrary = \"/l.so\"\ntoken = { label = \"t\" }\n" + kSet)
              .find("is not 1..64 characters") != std::string::npos);
}

TEST_CASE("member::load_fleet_config refuses a file others may write, or that is missing") {
    testsupport::TempDir tmp;
    const auto path = tmp.path() / "fleet.toml";
    CHECK(code_of([&] { load_fleet_config(path); }) == ErrorCode::not_found);
    {
        std::ofstream out(path);
        out << kGood;
    }
    ::chmod(path.c_str(), 0600);
    CHECK(load_fleet_config(path).members.size() == 3);
    ::chmod(path.c_str(), 0620);
    CHECK(code_of([&] { load_fleet_config(path); }) == ErrorCode::permission);
    ::chmod(path.c_str(), 0602);
    CHECK(code_of([&] { load_fleet_config(path); }) == ErrorCode::permission);
    ::chmod(path.c_str(), 0644); // readable by others is fine: it holds no secret
    CHECK(load_fleet_config(path).members.size() == 3);
    SUBCASE("a library that another user may change is refused") {
        const auto lib = tmp.path() / "lib";
        std::filesystem::create_directory(lib);
        ::chmod(lib.c_str(), 0755);
        { std::ofstream out(lib / "libv.so"); }
        const auto with_lib = tmp.path() / "lib.toml";
        {
            std::ofstream out(with_lib);
            out << "[member.a]\nlibrary = \"" << (lib / "libv.so").string()
                << "\"\ntoken = { label = \"t\" }\n[set.s]\nmembers = [\"a\"]\n";
        }
        ::chmod(with_lib.c_str(), 0600);
        ::chmod((lib / "libv.so").c_str(), 0644);
        CHECK(load_fleet_config(with_lib).members.size() == 1);
        ::chmod((lib / "libv.so").c_str(), 0666);
        CHECK(code_of([&] { load_fleet_config(with_lib); }) == ErrorCode::permission);
        ::chmod((lib / "libv.so").c_str(), 0644);
        ::chmod(lib.c_str(), 0777); // anyone could put another library in its place
        CHECK(code_of([&] { load_fleet_config(with_lib); }) == ErrorCode::permission);
    }
    const auto link = tmp.path() / "link.toml";
    std::filesystem::create_symlink(path, link);
    CHECK(code_of([&] { load_fleet_config(link); }) != ErrorCode::internal); // not followed
}
