#pragma once
// The user database for a statically linked preloadrun (see
// preloadrun/common/accounts.hpp): the pieces of accounts_getent.cpp, apart
// for the tests, with the files they read as parameters.

#include "preloadrun/common/accounts.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace preloadrun::accounts::getent {

enum class Database { passwd, group };

// What to look up: a name, or (by_id) a uid or gid.
struct Key {
    bool by_id = false;
    std::string name;
    std::uint32_t id = 0;
};

struct Sources {
    std::string nsswitch = "/etc/nsswitch.conf";
    std::string passwd = "/etc/passwd";
    std::string group = "/etc/group";
    std::string getent = "/usr/bin/getent";
};

// Whether the database's first source in this nsswitch.conf text is
// "files" (also when the text has no line for it: glibc's default).
bool files_first(std::string_view nsswitch, Database database);

// One line of passwd(5) / group(5) text; nullopt for a comment, a blank or
// malformed line, or a NIS "+"/"-" entry.
std::optional<User> parse_passwd_line(std::string_view line);
std::optional<Group> parse_group_line(std::string_view line);

// The first entry for `key` in passwd(5) / group(5) text.
std::optional<User> find_in_passwd(std::string_view text, const Key& key);
std::optional<Group> find_in_group(std::string_view text, const Key& key);

// `getent DATABASE -- KEY`'s standard output (at most 1 MiB), run without a
// shell, with no environment but LC_ALL=C, stdin and stderr on /dev/null, all
// signals at their defaults; only whole lines. Should preloadrun's reaper
// (a waitpid(-1)) take the child first, nothing is lost: the answer is the
// output, and the child is waited for through a pidfd, never by a pid that
// may have been used again. nullopt when it could not be run.
std::optional<std::string> run_getent(const std::string& getent, Database database,
                                      const std::string& key);

std::optional<User> find_user(const Sources& sources, const Key& key);
std::optional<Group> find_group(const Sources& sources, const Key& key);

} // namespace preloadrun::accounts::getent
