#include "server/connection_shares.hpp"

#include "preloadrun/common/error.hpp"

namespace preloadrun::sim {

ConnectionShares::ConnectionShares(const ConnectionShareLimits& limits, uid_t service_uid)
    : limits_(limits), service_uid_(service_uid) {
    if (limits_.max_connections <= limits_.reserved) {
        throw Error(ErrorCode::usage, std::string(kMaxConnectionsOption) + " must be more than " +
                                          std::to_string(limits_.reserved) +
                                          ", the connections kept for root and the service's "
                                          "user");
    }
    const auto others = limits_.max_connections - limits_.reserved;
    if (limits_.per_uid == 0 || limits_.per_uid > others) {
        throw Error(ErrorCode::usage, std::string(kMaxConnectionsPerUidOption) + " must be 1 to " +
                                          std::to_string(others) + " (" + kMaxConnectionsOption +
                                          " " + std::to_string(limits_.max_connections) +
                                          " less the " + std::to_string(limits_.reserved) +
                                          " kept for root and the service's user)");
    }
    if (limits_.max_admin == 0) {
        throw Error(ErrorCode::usage, "the admin socket must serve at least one connection");
    }
}

std::string ConnectionShares::managers() const {
    return service_uid_ == 0 ? std::string("root") : "root and uid " + std::to_string(service_uid_);
}

std::size_t ConnectionShares::open_of(uid_t uid) const noexcept {
    if (manager(uid)) {
        return 0; // not counted by uid
    }
    auto it = per_uid_.find(uid);
    return it == per_uid_.end() ? 0 : it->second;
}

void ConnectionShares::admit(uid_t uid, bool admin) {
    if (admin) {
        if (admin_ >= limits_.max_admin) {
            throw Error(ErrorCode::limit, "the admin socket already serves " +
                                              std::to_string(admin_) +
                                              " connections, the most it serves at once; try "
                                              "again later");
        }
        ++admin_;
        return;
    }
    if (client_ >= limits_.max_connections) {
        throw Error(ErrorCode::limit,
                    limits_.program + " already serves " + std::to_string(client_) +
                        " connections, the most it serves at once (" + limits_.program + " serve " +
                        kMaxConnectionsOption + " " + std::to_string(limits_.max_connections) +
                        "); try again later");
    }
    if (manager(uid)) {
        ++client_;
        return;
    }
    const auto others = limits_.max_connections - limits_.reserved;
    const auto mine = open_of(uid);
    if (mine >= limits_.per_uid) {
        throw Error(ErrorCode::limit,
                    "uid " + std::to_string(uid) + " already has " + std::to_string(mine) +
                        " connections open to " + limits_.program + ", the most one uid may (" +
                        limits_.program + " serve " + kMaxConnectionsPerUidOption + " " +
                        std::to_string(limits_.per_uid) + "); close one or try again later");
    }
    if (others_ >= others) {
        throw Error(ErrorCode::limit,
                    limits_.program + " already serves " + std::to_string(others_) +
                        " connections of users other than " + managers() +
                        ", all it serves them (" + limits_.program + " serve " +
                        kMaxConnectionsOption + " " + std::to_string(limits_.max_connections) +
                        ", of which " + std::to_string(limits_.reserved) + " are kept for " +
                        managers() + "); try again later");
    }
    ++per_uid_[uid];
    ++others_;
    ++client_;
}

void ConnectionShares::release(uid_t uid, bool admin) noexcept {
    if (admin) {
        admin_ -= admin_ > 0 ? 1 : 0;
        return;
    }
    client_ -= client_ > 0 ? 1 : 0;
    if (manager(uid)) {
        return;
    }
    auto it = per_uid_.find(uid);
    if (it == per_uid_.end()) {
        return; // cannot happen: only what admit() counted in is released
    }
    others_ -= others_ > 0 ? 1 : 0;
    if (--it->second == 0) {
        per_uid_.erase(it);
    }
}

} // namespace preloadrun::sim
