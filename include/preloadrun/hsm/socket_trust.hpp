#pragma once
// What a client checks before it sends anything to the HSM service: the
// socket's path might have been taken by another local user (a directory
// created first under a shared path, a fake server bound there), and a
// client sends passphrases and PINs. The checks:
//   1. the socket's directory is owned by a trusted uid and not writable by
//      group or others, so no one else can have put or replaced the socket;
//   2. the socket is a socket (not a symlink) owned by a trusted uid;
//   3. the connection goes through that directory's descriptor, so a path
//      changed after the check changes nothing;
//   4. the process at the other end (SO_PEERCRED) runs as a trusted uid.
// Trusted: root, the client's own effective uid, and the service's user.

#include "preloadrun/common/dir.hpp"

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <sys/types.h>
#include <vector>

namespace preloadrun::hsm {

class TrustedUids {
public:
    // root, geteuid(), and the service's user: HSMFLEET_SERVICE_USER (or
    // HSMSIM_SERVICE_USER; a user name or a numeric uid) when set, otherwise
    // the `hsmfleet` and `hsmsim` accounts the user database has, looked up
    // only when a uid other than root's and this user's is asked about (the
    // user database may be slow to ask: it loads modules, reads files). Throws
    // Error(usage) when the variable names no user.
    static TrustedUids for_client();

    TrustedUids(uid_t self, std::vector<uid_t> service);
    bool contains(uid_t uid) const noexcept;
    // "root, uid 1000 (this user) or uid 998 (the service user)", for messages.
    std::string describe() const;

private:
    struct Service {
        bool lazy = false; // `uids` are the default accounts, looked up on first need
        std::once_flag once;
        std::vector<uid_t> uids;
    };
    const std::vector<uid_t>& service() const;

    uid_t self_;
    std::shared_ptr<Service> service_;
};

// The service's user from the environment or the user database, if any.
// Throws Error(usage) for an HSMFLEET_SERVICE_USER that names no user.
std::vector<uid_t> service_uids();

struct CheckedSocket {
    Dir dir;                  // the socket's directory, held open
    std::string connect_path; // the socket, reached through `dir`'s descriptor
};

// Checks 1 and 2 for the socket at `path`. Throws Error(not_found) when the
// directory or the socket does not exist, Error(unavailable) when this user
// may not look into the directory (access_denied() says why),
// Error(permission) naming what is wrong and whose it is otherwise.
CheckedSocket check_socket_path(const std::string& path, const TrustedUids& trusted);

// For a message after EACCES on `what` ("the socket /run/hsmsim/client.sock",
// "its directory /run/hsmsim"), whose status is `st`, which this process
// needed to write (a socket, to connect) or to search (a directory): its
// mode, owner and group, and when the group would let the process in but
// the process is not in that group, to add the user to it.
enum class Needed { write, search };
std::string access_denied(std::string_view what, const struct stat& st, Needed needed);

// Check 4, on a connected socket: throws Error(permission) naming the uid
// the service runs as.
void check_peer(int fd, const std::string& path, const TrustedUids& trusted);

} // namespace preloadrun::hsm
