// The user database through glibc (src/common/accounts.cpp), which every
// program but the static preloadrun uses; the answers checked against
// getent(1), the system's own tool.
#include "preloadrun/common/accounts.hpp"

#include <array>
#include <cstdio>
#include <doctest/doctest.h>
#include <memory>
#include <string>

namespace accounts = preloadrun::accounts;

namespace {

// The first line `getent ARGS` prints ("" when none).
std::string getent(const std::string& args) {
    std::unique_ptr<FILE, int (*)(FILE*)> pipe(::popen(("getent " + args).c_str(), "r"), ::pclose);
    REQUIRE(pipe);
    std::array<char, 4096> line{};
    if (std::fgets(line.data(), static_cast<int>(line.size()), pipe.get()) == nullptr) {
        return {};
    }
    std::string text(line.data());
    return text.substr(0, text.find('\n'));
}

} // namespace

TEST_CASE("accounts: users and groups as getent(1) sees them") {
    auto root = accounts::user_by_name("root");
    REQUIRE(root);
    CHECK(root->uid == 0);
    const auto line = getent("passwd root"); // name:password:uid:gid:gecos:home:shell
    CHECK(line.rfind("root:", 0) == 0);
    CHECK(line.find(":0:0:") != std::string::npos);
    CHECK(line.find(":" + root->home + ":") != std::string::npos);
    auto by_uid = accounts::user_by_uid(0);
    REQUIRE(by_uid);
    CHECK(by_uid->name == "root");
    CHECK(by_uid->home == root->home);
    auto group = accounts::group_by_gid(0);
    REQUIRE(group);
    CHECK(getent("group 0").rfind(group->name + ":", 0) == 0);
    CHECK(accounts::group_by_name(group->name)->gid == 0);
    CHECK_FALSE(accounts::user_by_name("no-such-user-preloadrun"));
    CHECK_FALSE(accounts::group_by_name("no-such-group-preloadrun"));
    CHECK_FALSE(accounts::user_by_uid(4000000001U));
    CHECK_FALSE(accounts::group_by_gid(4000000001U));
}
