#include "pkcs11/pool.hpp"

namespace preloadrun::pkcs11 {

Pool::Pool(Connector connect, std::size_t max_idle)
    : connect_(std::move(connect)), max_idle_(max_idle) {}

Pool::Lease::~Lease() {
    if (service_ && pool_ != nullptr) {
        pool_->give_back(std::move(service_));
    }
}

Pool::Lease Pool::acquire() {
    std::vector<std::unique_ptr<hsm::Service>> closed; // closed outside the lock
    {
        std::lock_guard lock(mutex_);
        if (!kept_ || !kept_->usable()) {
            // The callers racing it need a connection anyway.
            auto fresh = connect_();
            if (kept_) {
                // Opened again after the service closed it as idle: it must
                // be the oldest connection of this process again, so the
                // idle ones, older, go (once it is open: what this process
                // loaded stays).
                closed = std::move(idle_);
                idle_.clear();
            }
            kept_ = std::move(fresh);
        }
        while (!idle_.empty()) {
            auto service = std::move(idle_.back());
            idle_.pop_back();
            if (service->usable()) {
                return Lease(*this, std::move(service));
            }
            closed.push_back(std::move(service));
        }
    }
    return Lease(*this, connect_());
}

void Pool::give_back(std::unique_ptr<hsm::Service> service) noexcept {
    std::lock_guard lock(mutex_);
    if (idle_.size() < max_idle_) {
        try {
            idle_.push_back(std::move(service));
        } catch (...) {
            // Out of memory: the connection is closed instead.
        }
    }
}

} // namespace preloadrun::pkcs11
