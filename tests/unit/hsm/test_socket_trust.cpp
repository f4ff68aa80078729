#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/socket_trust.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <cstdlib>
#include <cstring>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

using namespace preloadrun;
using namespace preloadrun::hsm;
namespace fs = std::filesystem;
using testsupport::code_of;

namespace {

constexpr uid_t kOther = 2001;

// A listening socket at `path`, bound and listening as the caller.
int listen_at(const fs::path& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 4) == 0);
    return fd;
}

int connect_to(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    return fd;
}

class EnvVar {
public:
    EnvVar(const char* name, const char* value) : name_(name) {
        if (const char* old = std::getenv(name)) {
            old_ = old;
        }
        if (value != nullptr) {
            ::setenv(name, value, 1);
        } else {
            ::unsetenv(name);
        }
    }
    EnvVar(const EnvVar&) = delete;
    EnvVar& operator=(const EnvVar&) = delete;
    ~EnvVar() {
        if (old_) {
            ::setenv(name_, old_->c_str(), 1);
        } else {
            ::unsetenv(name_);
        }
    }

private:
    const char* name_;
    std::optional<std::string> old_;
};

} // namespace

TEST_CASE("hsm::TrustedUids") {
    const TrustedUids trusted(1000, {998});
    CHECK(trusted.contains(0));
    CHECK(trusted.contains(1000));
    CHECK(trusted.contains(998));
    CHECK_FALSE(trusted.contains(1001));
    CHECK(trusted.describe() == "root, uid 1000 (this user) or uid 998 (the service user, "
                                "HSMFLEET_SERVICE_USER)");
    CHECK(TrustedUids(0, {}).describe() == "root");
}

TEST_CASE("hsm::service_uids") {
    EnvVar fleet_unset("HSMFLEET_SERVICE_USER", nullptr);
    SUBCASE("HSMSIM_SERVICE_USER as a uid") {
        EnvVar var("HSMSIM_SERVICE_USER", "2100");
        CHECK(service_uids() == std::vector<uid_t>{2100});
    }
    SUBCASE("HSMSIM_SERVICE_USER as a user name") {
        EnvVar var("HSMSIM_SERVICE_USER", "root");
        CHECK(service_uids() == std::vector<uid_t>{0});
    }
    SUBCASE("HSMFLEET_SERVICE_USER wins over HSMSIM_SERVICE_USER") {
        EnvVar older("HSMSIM_SERVICE_USER", "2100");
        EnvVar var("HSMFLEET_SERVICE_USER", "2200");
        CHECK(service_uids() == std::vector<uid_t>{2200});
    }
    SUBCASE("a service user naming no user is a usage error, naming the variable") {
        EnvVar var("HSMSIM_SERVICE_USER", "no-such-user-here");
        CHECK(code_of([] { service_uids(); }) == ErrorCode::usage);
        try {
            service_uids();
        } catch (const Error& e) {
            CHECK(std::string(e.what()).rfind("HSMSIM_SERVICE_USER='no-such-user-here'", 0) == 0);
        }
        EnvVar fleet("HSMFLEET_SERVICE_USER", "nor-this-one");
        try {
            service_uids();
        } catch (const Error& e) {
            CHECK(std::string(e.what()).rfind("HSMFLEET_SERVICE_USER='nor-this-one'", 0) == 0);
        }
    }
    SUBCASE("unset: the hsmfleet and hsmsim accounts that exist") {
        EnvVar var("HSMSIM_SERVICE_USER", nullptr);
        std::vector<uid_t> expected;
        for (const char* name : {"hsmfleet", "hsmsim"}) {
            if (const passwd* entry = ::getpwnam(name)) {
                expected.push_back(entry->pw_uid);
            }
        }
        CHECK(service_uids() == expected);
    }
}

TEST_CASE("hsm::check_socket_path") {
    testsupport::TempDir tmp;
    const TrustedUids trusted(::geteuid(), {});
    const fs::path dir = tmp / "d";
    fs::create_directory(dir);
    ::chmod(dir.c_str(), 0755);
    const auto sock = (dir / "s.sock").string();

    SUBCASE("a missing socket or directory is not_found") {
        CHECK(code_of([&] { check_socket_path(sock, trusted); }) == ErrorCode::not_found);
        CHECK(code_of([&] { check_socket_path((tmp / "none" / "s").string(), trusted); }) ==
              ErrorCode::not_found);
    }
    SUBCASE("a socket in a trusted private directory is reached through the descriptor") {
        int fd = listen_at(sock);
        auto checked = check_socket_path(sock, trusted);
        CHECK(checked.connect_path.rfind("/proc/self/fd/", 0) == 0);
        int client = connect_to(checked.connect_path);
        check_peer(client, sock, trusted);
        ::close(client);
        ::close(fd);
    }
    SUBCASE("a directory writable by group or others is refused") {
        int fd = listen_at(sock);
        for (mode_t mode : {0775, 0757, 01777}) {
            ::chmod(dir.c_str(), mode);
            CHECK(code_of([&] { check_socket_path(sock, trusted); }) == ErrorCode::permission);
        }
        ::close(fd);
    }
    SUBCASE("a regular file or a symlink is not a socket") {
        std::ofstream(dir / "file") << "x";
        CHECK(code_of([&] { check_socket_path((dir / "file").string(), trusted); }) ==
              ErrorCode::permission);
        int fd = listen_at(tmp / "real.sock");
        fs::create_symlink(tmp / "real.sock", dir / "link.sock");
        CHECK(code_of([&] { check_socket_path((dir / "link.sock").string(), trusted); }) ==
              ErrorCode::permission);
        ::close(fd);
    }
    SUBCASE("a directory or socket of an untrusted uid is refused (as root)") {
        if (::geteuid() != 0) {
            MESSAGE("needs root to give files to another uid");
            return;
        }
        int fd = listen_at(sock);
        REQUIRE(::chown(sock.c_str(), kOther, kOther) == 0);
        CHECK(code_of([&] { check_socket_path(sock, trusted); }) == ErrorCode::permission);
        CHECK_NOTHROW(check_socket_path(sock, TrustedUids(0, {kOther})));
        REQUIRE(::chown(sock.c_str(), 0, 0) == 0);
        REQUIRE(::chown(dir.c_str(), kOther, kOther) == 0);
        CHECK(code_of([&] { check_socket_path(sock, trusted); }) == ErrorCode::permission);
        CHECK_NOTHROW(check_socket_path(sock, TrustedUids(0, {kOther})));
        ::close(fd);
    }
}

TEST_CASE("hsm::access_denied") {
    // A group this process is not in, and its name as a message gives it.
    gid_t outside = 2100;
    while (outside == ::getegid() || group_member(outside) != 0) {
        ++outside;
    }
    const group* entry = ::getgrgid(outside);
    const std::string name = entry != nullptr ? entry->gr_name : std::to_string(outside);
    struct stat st {};
    st.st_uid = 2100;
    st.st_gid = outside;
    const std::string self = "is not open to this user (uid " + std::to_string(::geteuid()) + ")";

    SUBCASE("a socket open to a group this process is not in: that group, and the fix") {
        st.st_mode = S_IFSOCK | 0660;
        CHECK(access_denied("the socket", st, Needed::write) ==
              "the socket (mode 0660, owner uid 2100, group " + name + ") " + self +
                  " but to group " + name + ", which this process is not in: add the user to " +
                  "group " + name + " (usermod -aG " + name + " USER), then log in again");
    }
    SUBCASE("a directory open to that group for search") {
        st.st_mode = S_IFDIR | 0750;
        CHECK(access_denied("its directory /d", st, Needed::search)
                  .starts_with("its directory /d (mode 0750, owner uid 2100, group " + name + ") " +
                               self + " but to group " + name));
    }
    SUBCASE("the group may not write the socket: no group to join") {
        st.st_mode = S_IFSOCK | 0640;
        CHECK(access_denied("the socket", st, Needed::write) ==
              "the socket (mode 0640, owner uid 2100, group " + name + ") " + self +
                  "; the service's owner grants access through its group");
    }
    SUBCASE("a group this process is in: not told to join it") {
        st.st_mode = S_IFSOCK | 0660;
        st.st_gid = ::getegid();
        const auto text = access_denied("the socket", st, Needed::write);
        CHECK(text.find("usermod") == std::string::npos);
        CHECK(text.ends_with("; the service's owner grants access through its group"));
    }
}

TEST_CASE("hsm::check_peer refuses a service of an untrusted uid (as root)") {
    if (::geteuid() != 0) {
        MESSAGE("needs root to start a server as another uid");
        return;
    }
    testsupport::TempDir tmp;
    const auto sock = (tmp / "s.sock").string();
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        // Bound as root in a trusted directory, listening as another uid:
        // only the check of the peer can tell.
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
        if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
            ::setresgid(kOther, kOther, kOther) != 0 || ::setresuid(kOther, kOther, kOther) != 0 ||
            ::listen(fd, 1) != 0) {
            ::_exit(1);
        }
        (void)!::write(ready[1], "x", 1);
        int conn = ::accept(fd, nullptr, nullptr);
        char byte;
        (void)!::read(conn, &byte, 1);
        ::_exit(0);
    }
    ::close(ready[1]);
    char byte = 0;
    REQUIRE(::read(ready[0], &byte, 1) == 1);
    ::close(ready[0]);
    const TrustedUids trusted(0, {});
    auto checked = check_socket_path(sock, trusted); // directory and socket are root's
    int client = connect_to(checked.connect_path);
    try {
        check_peer(client, sock, trusted);
        FAIL("a service running as uid 2001 was trusted");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::permission);
        CHECK(std::string(e.what()).find("runs as uid 2001") != std::string::npos);
    }
    CHECK_NOTHROW(check_peer(client, sock, TrustedUids(0, {kOther})));
    ::close(client);
    int status = 0;
    ::waitpid(child, &status, 0);
    CHECK(WIFEXITED(status));
}
