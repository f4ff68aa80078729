#pragma once
// Users and groups from the system's user database (NSS: /etc/passwd and
// /etc/group, and whatever else /etc/nsswitch.conf names: LDAP, sssd,
// systemd's dynamic users).
//
// Two implementations answer the same four questions. accounts.cpp (in
// preloadrun_common) asks glibc in the process, which loads the NSS modules
// it needs. preloadrun, linked statically for its start-up time, cannot: a
// statically linked glibc cannot safely load those modules (a lookup that
// reaches one crashes). It links accounts_getent.cpp instead (the object in
// the program wins over the archive's): /etc/passwd or /etc/group read
// directly when nsswitch.conf asks files first and they have the entry,
// otherwise getent(1), run without a shell, which has the system's NSS.
//
// An entry that cannot be found, or a database that cannot be read, is
// nullopt: the callers treat both as "no such user/group".

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

namespace preloadrun::accounts {

struct User {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string home;
};

struct Group {
    std::string name;
    gid_t gid = 0;
};

std::optional<User> user_by_name(const std::string& name);
std::optional<User> user_by_uid(uid_t uid);
std::optional<Group> group_by_name(const std::string& name);
std::optional<Group> group_by_gid(gid_t gid);

// A uid or gid written in decimal: the whole text, nothing else. (Inline: a
// definition in accounts.cpp would pull that object, and glibc's NSS, into
// the static preloadrun.)
inline std::optional<std::uint32_t> parse_id(std::string_view text) {
    std::uint32_t id = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
    if (ec != std::errc() || end != text.data() + text.size()) {
        return std::nullopt;
    }
    return id;
}

} // namespace preloadrun::accounts
