#pragma once
// How the service's connections are shared, so that no user can lock the
// others out by opening connections and sending nothing. The client socket
// serves at most `max_connections` at once, and the last `reserved` of them
// are kept for root and the service's own user (the managers): whatever the
// others open, root's `hsmsim module list` still connects. Every other uid
// may hold at most `per_uid` connections, so that one user cannot take all
// of the others' share either. The admin socket has a budget of its own,
// which nothing on the client socket touches. Not thread-safe: the server's
// accepting thread alone uses it.

#include <cstddef>
#include <map>
#include <string>
#include <sys/types.h>

namespace preloadrun::sim {

inline constexpr std::size_t kDefaultMaxConnections = 256;
inline constexpr std::size_t kMinMaxConnections = 32;
inline constexpr std::size_t kMaxMaxConnections = 65536;
inline constexpr std::size_t kDefaultMaxConnectionsPerUid = 32;
inline constexpr std::size_t kReservedConnections = 16;
inline constexpr std::size_t kMaxAdminConnections = 32;

// The command-line options that set each limit, for the messages.
inline constexpr const char* kMaxConnectionsOption = "--max-connections";
inline constexpr const char* kMaxConnectionsPerUidOption = "--max-connections-per-uid";

struct ConnectionShareLimits {
    std::size_t max_connections = kDefaultMaxConnections; // the client socket, all users
    std::size_t per_uid = kDefaultMaxConnectionsPerUid;   // each user but the managers
    std::size_t reserved = kReservedConnections;          // of max_connections, for the managers
    std::size_t max_admin = kMaxAdminConnections;         // the admin socket
    std::string program = "hsmfleet";                     // the service's name, for the messages
};

class ConnectionShares {
public:
    // `service_uid`: the uid the service runs as; it and root are the
    // managers. Throws Error(usage), naming the option, when the limits
    // leave the other users no connection, or give one of them more than
    // all of theirs (per_uid above max_connections - reserved).
    ConnectionShares(const ConnectionShareLimits& limits, uid_t service_uid);

    // Counts in one more connection of `uid`, on the admin socket or the
    // client socket. Throws Error(limit) when its share is full, with one
    // line for the refused client that names the limit and its option.
    void admit(uid_t uid, bool admin);
    // Counts out a connection that admit() counted in.
    void release(uid_t uid, bool admin) noexcept;

    // Root or the service's user.
    bool manager(uid_t uid) const noexcept { return uid == 0 || uid == service_uid_; }
    // Connections open on the client socket: all, of the other users, of `uid`.
    std::size_t client_open() const noexcept { return client_; }
    std::size_t others_open() const noexcept { return others_; }
    std::size_t open_of(uid_t uid) const noexcept;
    std::size_t admin_open() const noexcept { return admin_; }

private:
    // "root and uid 2100" (or "root" when the service runs as root).
    std::string managers() const;

    ConnectionShareLimits limits_;
    uid_t service_uid_;
    std::size_t client_ = 0;
    std::size_t others_ = 0; // of client_: users other than the managers
    std::size_t admin_ = 0;
    std::map<uid_t, std::size_t> per_uid_; // other users with connections open
};

} // namespace preloadrun::sim
