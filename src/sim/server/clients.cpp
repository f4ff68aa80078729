#include "server/clients.hpp"

#include "preloadrun/common/log.hpp"

#include <optional>
#include <utility>

namespace preloadrun::sim {

Clients::Lease::Lease(Lease&& other) noexcept
    : clients_(std::exchange(other.clients_, nullptr)), pid_(other.pid_),
      client_(std::exchange(other.client_, kNoClient)), serial_(other.serial_) {}

Clients::Lease& Clients::Lease::operator=(Lease&& other) noexcept {
    if (this != &other) {
        release();
        clients_ = std::exchange(other.clients_, nullptr);
        pid_ = other.pid_;
        client_ = std::exchange(other.client_, kNoClient);
        serial_ = other.serial_;
    }
    return *this;
}

void Clients::Lease::release() noexcept {
    if (clients_ != nullptr) {
        std::exchange(clients_, nullptr)->disconnect(pid_, client_, serial_);
    }
}

Clients::Lease Clients::connect(uid_t uid, pid_t pid) {
    std::lock_guard lock(mutex_);
    auto [it, added] = clients_.try_emplace(pid);
    if (added) {
        it->second.client = Client{next_++, uid, pid};
    }
    const auto serial = next_serial_++;
    it->second.open.insert(serial);
    return Lease(this, pid, it->second.client.id, serial);
}

void Clients::note_loaded(pid_t pid, ClientId client) {
    std::lock_guard lock(mutex_);
    auto it = clients_.find(pid);
    if (it != clients_.end() && it->second.client.id == client) {
        it->second.loaded = true;
    }
}

bool Clients::keeps_objects(const Lease& lease) const {
    std::lock_guard lock(mutex_);
    auto it = clients_.find(lease.pid_);
    if (lease.clients_ != this || it == clients_.end() || it->second.client.id != lease.client_) {
        return false;
    }
    const auto& entry = it->second;
    return entry.loaded && !entry.open.empty() && *entry.open.begin() == lease.serial_;
}

void Clients::disconnect(pid_t pid, ClientId client, std::uint64_t serial) noexcept {
    std::optional<Client> gone;
    {
        std::lock_guard lock(mutex_);
        auto it = clients_.find(pid);
        if (it == clients_.end() || it->second.client.id != client) {
            return; // cannot happen: a lease is released once
        }
        it->second.open.erase(serial);
        if (it->second.open.empty()) {
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
    return it == clients_.end() ? 0 : it->second.open.size();
}

std::size_t Clients::size() const {
    std::lock_guard lock(mutex_);
    return clients_.size();
}

} // namespace preloadrun::sim
