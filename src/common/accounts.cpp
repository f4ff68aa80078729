// The user database through glibc, in this process (see accounts.hpp). This
// object defines only the four lookups, so that a program that links its
// own (preloadrun: accounts_getent.cpp) never pulls it from the archive.
#include "preloadrun/common/accounts.hpp"

#include <cerrno>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>
#include <vector>

namespace preloadrun::accounts {

namespace {

constexpr std::size_t kMaxBuffer = std::size_t{1} << 20;

std::size_t first_size(int which) {
    const long size = ::sysconf(which);
    return size > 0 ? static_cast<std::size_t>(size) : 16384;
}

User to_user(const passwd& pw) {
    return User{pw.pw_name != nullptr ? pw.pw_name : "", pw.pw_uid, pw.pw_gid,
                pw.pw_dir != nullptr ? pw.pw_dir : ""};
}

Group to_group(const group& gr) {
    return Group{gr.gr_name != nullptr ? gr.gr_name : "", gr.gr_gid};
}

// One getpwnam_r-like call, with a buffer that grows while glibc says ERANGE
// (a group with many members).
template <typename Out, typename CEntry, typename Key, typename Get>
std::optional<Out> lookup(int size_name, Key key, Get get, Out (*convert)(const CEntry&)) {
    std::vector<char> buffer(first_size(size_name));
    CEntry entry{};
    while (true) {
        CEntry* found = nullptr;
        const int rc = get(key, &entry, buffer.data(), buffer.size(), &found);
        if (rc == ERANGE && buffer.size() < kMaxBuffer) {
            buffer.resize(buffer.size() * 2);
            continue;
        }
        if (rc != 0 || found == nullptr) {
            return std::nullopt;
        }
        return convert(*found);
    }
}

} // namespace

std::optional<User> user_by_name(const std::string& name) {
    return lookup(_SC_GETPW_R_SIZE_MAX, name.c_str(), ::getpwnam_r, to_user);
}

std::optional<User> user_by_uid(uid_t uid) {
    return lookup(_SC_GETPW_R_SIZE_MAX, uid, ::getpwuid_r, to_user);
}

std::optional<Group> group_by_name(const std::string& name) {
    return lookup(_SC_GETGR_R_SIZE_MAX, name.c_str(), ::getgrnam_r, to_group);
}

std::optional<Group> group_by_gid(gid_t gid) {
    return lookup(_SC_GETGR_R_SIZE_MAX, gid, ::getgrgid_r, to_group);
}

} // namespace preloadrun::accounts
