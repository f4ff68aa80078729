#include "server/own_directory.hpp"

#include "preloadrun/common/accounts.hpp"
#include "preloadrun/common/error.hpp"

#include <cerrno>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun::sim {

namespace {

// The user's name, or "" for a uid without one.
std::string user_name(uid_t uid) {
    const auto user = accounts::user_by_uid(uid);
    return user ? user->name : std::string();
}

[[noreturn]] void refuse(const std::string& where, uid_t owner, uid_t user,
                         std::string_view setting) {
    const auto name = user_name(owner);
    std::string text = where + " belongs to uid " + std::to_string(owner) +
                       (name.empty() ? std::string() : " (" + name + ")") + ": ";
    if (user == 0) {
        text += "hsmsim serve as root would leave files there that its owner's service cannot "
                "use; run it as that user (" +
                (name.empty() ? "uid " + std::to_string(owner)
                              : "runuser -u " + name + " -- hsmsim serve") +
                "), or set " + std::string(setting) + " to a directory of root's";
    } else {
        text += "hsmsim serve runs as uid " + std::to_string(user) +
                "; run it as that user, or set " + std::string(setting) +
                " to a directory of your own";
    }
    throw Error(ErrorCode::permission, text);
}

} // namespace

void require_own_directory(const std::filesystem::path& dir, uid_t user, std::string_view what,
                           std::string_view setting) {
    std::error_code ec;
    auto path = std::filesystem::absolute(dir.empty() ? "." : dir, ec).lexically_normal();
    if (ec) {
        return; // the directory's own checks report it
    }
    if (!path.has_filename()) {
        path = path.parent_path(); // "/a/b/" -> "/a/b"
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
        if (st.st_uid != user) {
            refuse(std::string(what) + " " + path.string(), st.st_uid, user, setting);
        }
        return;
    }
    if (errno != ENOENT) {
        return; // not ours to report: opening it will say what is wrong
    }
    for (auto above = path.parent_path(); !above.empty(); above = above.parent_path()) {
        if (::stat(above.c_str(), &st) == 0) {
            if (st.st_uid != user && st.st_uid != 0) {
                refuse(std::string(what) + " " + path.string() + " would be made in " +
                           above.string() + ", which",
                       st.st_uid, user, setting);
            }
            return;
        }
        if (errno != ENOENT || above == above.root_path()) {
            return;
        }
    }
}

} // namespace preloadrun::sim
