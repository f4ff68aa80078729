#include "preloadrun/hsm/socket_trust.hpp"

#include "preloadrun/common/accounts.hpp"
#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/service.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fcntl.h>
#include <filesystem>
#include <optional>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace preloadrun::hsm {

namespace {

// The accounts the packaged units run as: hsmfleet.service and hsmsim.service.
constexpr const char* kDefaultServiceUsers[] = {"hsmfleet", "hsmsim"};

std::optional<uid_t> lookup_user(const std::string& name) {
    if (auto user = accounts::user_by_name(name)) {
        return user->uid;
    }
    return std::nullopt;
}

std::string group_name(gid_t gid) {
    if (auto entry = accounts::group_by_gid(gid)) {
        return entry->name;
    }
    return std::to_string(gid);
}

bool in_group(gid_t gid) {
    if (::getegid() == gid) {
        return true;
    }
    const int count = ::getgroups(0, nullptr);
    if (count <= 0) {
        return false;
    }
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    const int got = ::getgroups(count, groups.data());
    return got > 0 && std::find(groups.begin(), groups.begin() + got, gid) != groups.begin() + got;
}

std::string mode_text(mode_t mode) {
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

bool have_proc_fd() {
    static const bool present = ::access("/proc/self/fd", X_OK) == 0;
    return present;
}

} // namespace

namespace {

// The service's user named by the environment, if it names one.
std::optional<uid_t> named_service_uid() {
    const auto found = getenv_found(kServiceUserVariable);
    if (found.value == nullptr) {
        return std::nullopt;
    }
    if (auto uid = accounts::parse_id(found.value)) {
        return uid;
    }
    if (auto uid = lookup_user(found.value)) {
        return uid;
    }
    throw Error(ErrorCode::usage, std::string(found.name) + "='" + found.value +
                                      "' is neither a user name nor a uid");
}

std::vector<uid_t> default_service_uids() {
    std::vector<uid_t> uids;
    for (const char* name : kDefaultServiceUsers) {
        if (auto uid = lookup_user(name)) {
            uids.push_back(*uid);
        }
    }
    return uids;
}

} // namespace

std::vector<uid_t> service_uids() {
    if (auto uid = named_service_uid()) {
        return {*uid};
    }
    return default_service_uids();
}

TrustedUids TrustedUids::for_client() {
    TrustedUids trusted(::geteuid(), std::vector<uid_t>{});
    if (auto uid = named_service_uid()) {
        trusted.service_->uids = {*uid};
    } else {
        trusted.service_->lazy = true;
    }
    return trusted;
}

TrustedUids::TrustedUids(uid_t self, std::vector<uid_t> service)
    : self_(self), service_(std::make_shared<Service>()) {
    service_->uids = std::move(service);
}

const std::vector<uid_t>& TrustedUids::service() const {
    if (service_->lazy) {
        std::call_once(service_->once, [s = service_.get()] { s->uids = default_service_uids(); });
    }
    return service_->uids;
}

bool TrustedUids::contains(uid_t uid) const noexcept {
    if (uid == 0 || uid == self_) {
        return true;
    }
    try {
        const auto& service = this->service();
        return std::find(service.begin(), service.end(), uid) != service.end();
    } catch (...) {
        return false; // the user database could not be read: not trusted
    }
}

std::string TrustedUids::describe() const {
    std::vector<std::string> names{"root"};
    if (self_ != 0) {
        names.push_back("uid " + std::to_string(self_) + " (this user)");
    }
    for (uid_t uid : service()) {
        if (uid != 0 && uid != self_) {
            names.push_back("uid " + std::to_string(uid) + " (the service user, " +
                            kServiceUserVariable.name + ")");
        }
    }
    std::string text;
    for (std::size_t i = 0; i < names.size(); ++i) {
        text += (i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
    }
    return text;
}

std::string access_denied(std::string_view what, const struct stat& st, Needed needed) {
    const mode_t group_bit = needed == Needed::write ? S_IWGRP : S_IXGRP;
    const auto group_text = group_name(st.st_gid);
    std::string text = std::string(what) + " (mode " + mode_text(st.st_mode) + ", owner uid " +
                       std::to_string(st.st_uid) + ", group " + group_text +
                       ") is not open to this user (uid " + std::to_string(::geteuid()) + ")";
    if ((st.st_mode & group_bit) != 0 && !in_group(st.st_gid)) {
        return text + " but to group " + group_text +
               ", which this process is not in: add the user to group " + group_text +
               " (usermod -aG " + group_text + " USER), then log in again";
    }
    return text + "; the service's owner grants access through its group";
}

CheckedSocket check_socket_path(const std::string& path, const TrustedUids& trusted) {
    std::filesystem::path socket(path);
    auto parent = socket.parent_path();
    if (parent.empty()) {
        parent = ".";
    }
    const std::string name = socket.filename().string();
    if (name.empty() || name == "." || name == "..") {
        throw Error(ErrorCode::usage, "'" + path + "' does not name a socket");
    }
    CheckedSocket checked{Dir::open(parent, Dir::LastLink::follow, Dir::Access::lookup), {}};
    const auto dir = checked.dir.status();
    const std::string refused = "refusing the HSM service at " + path + ": ";
    if (!trusted.contains(dir.st_uid)) {
        throw Error(ErrorCode::permission, refused + "its directory " + parent.string() +
                                               " belongs to uid " + std::to_string(dir.st_uid) +
                                               ", not to " + trusted.describe() +
                                               " (another user may have created it)");
    }
    if ((dir.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        throw Error(ErrorCode::permission,
                    refused + "its directory " + parent.string() +
                        " is writable by group or others, who could replace the socket");
    }
    if (::faccessat(checked.dir.fd(), ".", X_OK, AT_EACCESS) != 0 && errno == EACCES) {
        // The socket cannot even be looked up.
        throw Error(ErrorCode::unavailable,
                    "cannot reach the HSM service at " + path + ": Permission denied: " +
                        access_denied("its directory " + parent.string(), dir, Needed::search));
    }
    const auto entry = checked.dir.stat_entry(name);
    if (!entry) {
        throw Error(ErrorCode::not_found, path + ": no such socket");
    }
    if (!S_ISSOCK(entry->st_mode)) {
        throw Error(ErrorCode::permission,
                    refused + (S_ISLNK(entry->st_mode) ? "it is a symbolic link" : "not a socket"));
    }
    if (!trusted.contains(entry->st_uid)) {
        throw Error(ErrorCode::permission, refused + "the socket belongs to uid " +
                                               std::to_string(entry->st_uid) + ", not to " +
                                               trusted.describe());
    }
    checked.connect_path = path;
    if (have_proc_fd()) {
        try {
            checked.connect_path = checked.dir.fd_path(name);
        } catch (const Error&) {
            // A name too long to be reached through /proc: the path itself,
            // still covered by the check of the peer.
        }
    }
    return checked;
}

void check_peer(int fd, const std::string& path, const TrustedUids& trusted) {
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        throw_errno("cannot read the credentials of the HSM service at " + path);
    }
    if (!trusted.contains(cred.uid)) {
        throw Error(ErrorCode::permission,
                    "refusing the HSM service at " + path + ": it runs as uid " +
                        std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) +
                        "), not as " + trusted.describe() +
                        "; another user may be serving there (if the service runs as another "
                        "account, name it in " +
                        kServiceUserVariable.name + ")");
    }
}

} // namespace preloadrun::hsm
