// The user database of the static preloadrun (src/supervisor/accounts_getent):
// nsswitch.conf's order, passwd(5)/group(5) lines, and getent(1) run as a
// child no waitpid(-1) can take, against scripted getent programs and
// against the machine's own database (glibc in this test program says what
// the answers must be).
#include "accounts_getent.hpp"
#include "support/temp_dir.hpp"

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <fstream>
#include <grp.h>
#include <pwd.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>

namespace ga = preloadrun::accounts::getent;
using ga::Database;
using ga::Key;

namespace {

void write(const std::filesystem::path& path, const std::string& text, mode_t mode = 0644) {
    std::ofstream(path) << text;
    REQUIRE(::chmod(path.c_str(), mode) == 0);
}

std::string read(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

Key name(const std::string& n) {
    return Key{false, n, 0};
}

Key id(std::uint32_t i) {
    return Key{true, {}, i};
}

// A directory with nsswitch.conf, passwd, group and a scripted getent that
// records its arguments in `calls` and prints `answer`.
struct World {
    testsupport::TempDir dir;
    ga::Sources sources;

    World(const std::string& nsswitch, const std::string& answer) {
        sources.nsswitch = (dir / "nsswitch.conf").string();
        sources.passwd = (dir / "passwd").string();
        sources.group = (dir / "group").string();
        sources.getent = (dir / "getent").string();
        write(sources.nsswitch, nsswitch);
        write(sources.passwd, "root:x:0:0:root:/root:/bin/sh\n"
                              "alice:x:1500:1500:Alice:/home/alice:/bin/sh\n");
        write(sources.group, "root:x:0:\nstaff:x:50:alice\n");
        write(dir / "answer", answer);
        write(sources.getent,
              "#!/bin/sh\necho \"$*\" >> '" + (dir / "calls").string() + "'\ncat '" +
                  (dir / "answer").string() + "'\n",
              0755);
    }
    std::string calls() const { return read(dir / "calls"); }
};

} // namespace

TEST_CASE("files_first: the first source of the database's line or glibc's default files") {
    CHECK(ga::files_first("passwd: files systemd\ngroup: files\n", Database::passwd));
    CHECK(ga::files_first("passwd:files\n", Database::passwd));
    CHECK(ga::files_first("passwd:\tfiles [NOTFOUND=return] ldap\n", Database::passwd));
    CHECK_FALSE(ga::files_first("passwd: sss files\n", Database::passwd));
    CHECK_FALSE(ga::files_first("passwd: compat\n", Database::passwd));
    CHECK_FALSE(ga::files_first("group: [SUCCESS=return] files\n", Database::group));
    CHECK_FALSE(ga::files_first("passwd: files\ngroup: ldap files\n", Database::group));
    CHECK(ga::files_first("# passwd: ldap\nhosts: dns\n", Database::passwd));
    CHECK(ga::files_first("", Database::group));
    CHECK_FALSE(ga::files_first("  passwd  :  ldap # files\n", Database::passwd));
    CHECK(ga::files_first("shadow: ldap\npasswd: files\n", Database::passwd));
}

TEST_CASE("passwd and group lines: the fields glibc's files source reads and nothing malformed") {
    auto user = ga::parse_passwd_line("alice:x:1500:1501:Alice A:/home/alice:/bin/sh");
    REQUIRE(user);
    CHECK(user->name == "alice");
    CHECK(user->uid == 1500);
    CHECK(user->gid == 1501);
    CHECK(user->home == "/home/alice");
    auto short_user = ga::parse_passwd_line("bob:x:7:8\r");
    REQUIRE(short_user);
    CHECK(short_user->home.empty());
    for (const char* bad : {"", "   ", "# alice:x:1:1::/:/bin/sh", "+alice::::::", "-bob:x:1:1::/:",
                            "carol:x:-1:1::/:", "dave:x:1x:1::/:", "erin:x:1",
                            ":x:1:1::/:", "frank:x:4294967296:1::/:"}) {
        CAPTURE(bad);
        CHECK_FALSE(ga::parse_passwd_line(bad));
    }
    auto group = ga::parse_group_line("staff:x:50:alice,bob");
    REQUIRE(group);
    CHECK(group->name == "staff");
    CHECK(group->gid == 50);
    CHECK(ga::parse_group_line("empty:x:51"));
    for (const char* bad : {"", "#staff:x:50:", "+:::", "staff:x::", "staff:x", "staff:x:5o:"}) {
        CAPTURE(bad);
        CHECK_FALSE(ga::parse_group_line(bad));
    }
}

TEST_CASE("find_in_passwd and find_in_group: the first entry by name or by id") {
    const std::string passwd = "# users\nroot:x:0:0::/root:/bin/sh\nbad line\n"
                               "alice:x:1500:1500::/home/alice:/bin/sh\n"
                               "alice2:x:1500:1500::/home/alice2:/bin/sh\n"
                               "alice:x:1600:1600::/elsewhere:/bin/sh";
    CHECK(ga::find_in_passwd(passwd, name("alice"))->uid == 1500);
    CHECK(ga::find_in_passwd(passwd, id(1500))->name == "alice");
    CHECK(ga::find_in_passwd(passwd, id(0))->home == "/root");
    CHECK_FALSE(ga::find_in_passwd(passwd, name("ali")));
    CHECK_FALSE(ga::find_in_passwd(passwd, name("1500")));
    CHECK_FALSE(ga::find_in_passwd(passwd, id(1700)));
    CHECK(ga::find_in_group("a:x:1:\nb:x:2:\n", id(2))->name == "b");
    CHECK(ga::find_in_group("a:x:1:\nb:x:2:\n", name("a"))->gid == 1);
}

TEST_CASE("files first: an entry /etc/passwd has is read there and getent never runs") {
    World world("passwd: files systemd\ngroup: files systemd\n", "");
    auto alice = ga::find_user(world.sources, name("alice"));
    REQUIRE(alice);
    CHECK(alice->uid == 1500);
    CHECK(alice->home == "/home/alice");
    CHECK(ga::find_user(world.sources, id(0))->name == "root");
    CHECK(ga::find_group(world.sources, name("staff"))->gid == 50);
    CHECK(ga::find_group(world.sources, id(50))->name == "staff");
    CHECK_FALSE(std::filesystem::exists(world.dir / "calls"));
}

TEST_CASE("an entry the files lack is getent's answer (LDAP or sssd or systemd's dynamic users)") {
    World world("passwd: files systemd\ngroup: files systemd\n",
                "dyn:x:61000:61000:Dynamic:/run/dyn:/usr/sbin/nologin\n");
    auto dyn = ga::find_user(world.sources, name("dyn"));
    REQUIRE(dyn);
    CHECK(dyn->uid == 61000);
    CHECK(dyn->home == "/run/dyn");
    CHECK(world.calls() == "passwd -- dyn\n");
    CHECK(ga::find_user(world.sources, id(61000))->name == "dyn");
    CHECK(world.calls() == "passwd -- dyn\npasswd -- 61000\n");
    // An answer that is not the entry asked for is no answer.
    CHECK_FALSE(ga::find_user(world.sources, name("other")));
    CHECK_FALSE(ga::find_user(world.sources, id(61001)));
}

TEST_CASE("a numeric name is a name: getent's answer by id does not count") {
    World world("group: ldap\n", "staff:x:50:\n");
    CHECK_FALSE(ga::find_group(world.sources, name("50")));
    CHECK(world.calls() == "group -- 50\n");
    CHECK(ga::find_group(world.sources, id(50))->name == "staff");
}

TEST_CASE("a key that looks like an option reaches getent as a key") {
    World world("group: ldap\n", "");
    CHECK_FALSE(ga::find_group(world.sources, name("--help")));
    CHECK(world.calls() == "group -- --help\n");
}

TEST_CASE("nsswitch.conf naming another source first: getent answers and not the files") {
    World world("passwd: ldap files\n", "alice:x:4242:4242::/ldap/alice:/bin/sh\n");
    CHECK(ga::find_user(world.sources, name("alice"))->uid == 4242);
    CHECK(world.calls() == "passwd -- alice\n");
}

TEST_CASE("no nsswitch.conf means files first as in glibc and an unreadable one means getent") {
    World world("", "alice:x:4242:4242::/ldap/alice:/bin/sh\n");
    std::filesystem::remove(world.sources.nsswitch);
    CHECK(ga::find_user(world.sources, name("alice"))->uid == 1500);
    std::filesystem::create_directory(world.sources.nsswitch);
    CHECK(ga::find_user(world.sources, name("alice"))->uid == 4242);
}

TEST_CASE("no getent or one that prints nonsense or fails: not found and no crash") {
    World world("passwd: ldap\n", "nonsense\n\n:::\n");
    CHECK_FALSE(ga::find_user(world.sources, name("alice")));
    write(world.sources.getent, "#!/bin/sh\nexit 2\n", 0755);
    CHECK_FALSE(ga::find_user(world.sources, name("alice")));
    write(world.sources.getent, "#!/bin/sh\nkill -9 $$\n", 0755);
    CHECK_FALSE(ga::find_user(world.sources, name("alice")));
    std::filesystem::remove(world.sources.getent);
    CHECK_FALSE(ga::find_user(world.sources, name("alice")));
    write(world.sources.getent, "not a program", 0755);
    CHECK_FALSE(ga::run_getent(world.sources.getent, Database::passwd, "alice"));
}

TEST_CASE("getent runs with default signals and an empty mask and only LC_ALL=C and stdio") {
    testsupport::TempDir dir;
    const auto script = dir / "getent";
    write(script,
          "#!/bin/sh\ngrep -E '^(SigBlk|SigIgn|SigCgt):' /proc/self/status\n"
          "ls /proc/self/fd | tr '\\n' ' '; echo\nenv | grep -v '^PWD=' | sort\n",
          0755);
    ::setenv("PRELOADRUN_TEST_SECRET", "not for getent", 1);
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    REQUIRE(::pthread_sigmask(SIG_BLOCK, &all, &old) == 0);
    auto previous = ::signal(SIGPIPE, SIG_IGN);
    const int leaked = ::open("/dev/null", O_RDONLY); // not close-on-exec
    auto output = ga::run_getent(script.string(), Database::passwd, "x");
    ::close(leaked);
    ::signal(SIGPIPE, previous);
    REQUIRE(::pthread_sigmask(SIG_SETMASK, &old, nullptr) == 0);
    ::unsetenv("PRELOADRUN_TEST_SECRET");
    REQUIRE(output);
    CAPTURE(*output);
    CHECK(output->find("SigBlk:\t0000000000000000\n") != std::string::npos);
    CHECK(output->find("SigIgn:\t0000000000000000\n") != std::string::npos);
    // /proc/self/fd of `ls`: 0, 1, 2 and ls's own directory descriptor.
    CHECK(output->find("\n0 1 2 3 \n") != std::string::npos);
    CHECK(output->find("LC_ALL=C\n") != std::string::npos);
    CHECK(output->find("PRELOADRUN_TEST_SECRET") == std::string::npos);
}

TEST_CASE("a waitpid(-1) of the supervisor's reaper taking the getent child loses nothing") {
    testsupport::TempDir dir;
    const auto script = dir / "getent";
    write(script, "#!/bin/sh\nsleep 0.3\necho 'slow:x:7:7::/slow:/bin/sh'\n", 0755);
    for (bool reaper_running : {true, false}) {
        CAPTURE(reaper_running);
        std::atomic<bool> done{false};
        std::thread reaper([&] {
            while (reaper_running && !done) {
                int status = 0;
                ::waitpid(-1, &status, WNOHANG);
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
            }
        });
        auto output = ga::run_getent(script.string(), Database::passwd, "slow");
        done = true;
        reaper.join();
        REQUIRE(output);
        CHECK(*output == "slow:x:7:7::/slow:/bin/sh\n");
        int status = 0;
        CHECK(::waitpid(-1, &status, WNOHANG) == -1); // no child left, no zombie
        CHECK(errno == ECHILD);
    }
}

TEST_CASE("a getent that dies mid-line leaves no half entry") {
    testsupport::TempDir dir;
    const auto script = dir / "getent";
    write(script, "#!/bin/sh\nprintf 'whole:x:1:1::/:/bin/sh\\nhalf:x:1' ; kill -9 $$\n", 0755);
    auto output = ga::run_getent(script.string(), Database::passwd, "half");
    REQUIRE(output);
    CHECK(*output == "whole:x:1:1::/:/bin/sh\n");
}

TEST_CASE("this machine's database: what glibc answers through the files or getent") {
    ga::Sources sources; // the real /etc files and /usr/bin/getent
    setpwent();
    int users = 0;
    while (passwd* pw = getpwent()) {
        CAPTURE(pw->pw_name);
        auto by_name = ga::find_user(sources, name(pw->pw_name));
        REQUIRE(by_name);
        CHECK(by_name->uid == pw->pw_uid);
        CHECK(by_name->gid == pw->pw_gid);
        CHECK(by_name->home == pw->pw_dir);
        ++users;
    }
    endpwent();
    CHECK(users > 0);
    CHECK(ga::find_user(sources, id(0))->name == getpwuid(0)->pw_name);
    CHECK(ga::find_group(sources, id(0))->name == getgrgid(0)->gr_name);
    CHECK(ga::find_group(sources, name(getgrgid(0)->gr_name))->gid == 0);
    CHECK_FALSE(ga::find_user(sources, name("no-such-user-preloadrun")));
    CHECK_FALSE(ga::find_group(sources, name("no-such-group-preloadrun")));
    // Through getent itself: a database whose first source is not files.
    World world("passwd: systemd files\n", "");
    world.sources.getent = sources.getent;
    world.sources.passwd = "/nonexistent";
    CHECK(ga::find_user(world.sources, name("root"))->uid == 0);
}
