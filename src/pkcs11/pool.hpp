#pragma once
// A pool of HSM service connections. A connection is not thread-safe, so each
// concurrent operation leases its own; a lease goes back to the pool when it
// ends, unless the operation found the connection broken (discard()).

#include "preloadrun/hsm/service.hpp"

#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace preloadrun::pkcs11 {

class Pool {
public:
    using Connector = std::function<std::unique_ptr<hsm::Service>()>;
    explicit Pool(Connector connect, std::size_t max_idle = 16);

    class Lease {
    public:
        Lease(Pool& pool, std::unique_ptr<hsm::Service> service)
            : pool_(&pool), service_(std::move(service)) {}
        Lease(Lease&&) noexcept = default;
        Lease& operator=(Lease&&) = delete;
        Lease(const Lease&) = delete;
        ~Lease();
        hsm::Service& operator*() const { return *service_; }
        hsm::Service* operator->() const { return service_.get(); }
        // The connection is broken: close it instead of returning it.
        void discard() noexcept { service_.reset(); }

    private:
        Pool* pool_;
        std::unique_ptr<hsm::Service> service_;
    };

    // An idle connection, or a new one (throws Error(unavailable) when the
    // service cannot be reached).
    Lease acquire();

private:
    void give_back(std::unique_ptr<hsm::Service> service) noexcept;

    Connector connect_;
    std::size_t max_idle_;
    std::mutex mutex_;
    std::vector<std::unique_ptr<hsm::Service>> idle_;
};

} // namespace preloadrun::pkcs11
