#include "sim/clients.hpp"

#include "preloadrun/common/log.hpp"

#include <optional>
#include <utility>

namespace preloadrun::sim {

Clients::Lease::Lease(Lease&& other) noexcept
    : clients_(std::exchange(other.clients_, nullptr)), pid_(other.pid_),
      client_(std::exchange(other.client_, kNoClient)) {}

Clients::Lease& Clients::Lease::operator=(Lease&& other) noexcept {
    if (this != &other) {
        release();
        clients_ = std::exchange(other.clients_, nullptr);
        pid_ = other.pid_;
        client_ = std::exchange(other.client_, kNoClient);
    }
    return *this;
}

void Clients::Lease::release() noexcept {
    if (clients_ != nullptr) {
        std::exchange(clients_, nullptr)->disconnect(pid_, client_);
    }
}

Clients::Lease Clients::connect(uid_t uid, pid_t pid) {
    std::lock_guard lock(mutex_);
    auto [it, added] = clients_.try_emplace(pid);
    if (added) {
        it->second.client = Client{next_++, uid, pid};
    }
    ++it->second.connections;
    return Lease(this, pid, it->second.client.id);
}

void Clients::disconnect(pid_t pid, ClientId client) noexcept {
    std::optional<Client> gone;
    {
        std::lock_guard lock(mutex_);
        auto it = clients_.find(pid);
        if (it == clients_.end() || it->second.client.id != client) {
            return; // cannot happen: a lease is released once
        }
        if (--it->second.connections == 0) {
            gone = it->second.client;
            clients_.erase(it);
        }
    }
    if (!gone) {
        return;
    }
    try {
        gone_(*gone);
    } catch (const std::exception& e) {
        log::get("sim.service")
            ->error("client pid {} (uid {}) has gone, but what it loaded may stay: {}", gone->pid,
                    gone->uid, e.what());
    }
}

std::size_t Clients::connections(pid_t pid) const {
    std::lock_guard lock(mutex_);
    auto it = clients_.find(pid);
    return it == clients_.end() ? 0 : it->second.connections;
}

std::size_t Clients::size() const {
    std::lock_guard lock(mutex_);
    return clients_.size();
}

} // namespace preloadrun::sim
