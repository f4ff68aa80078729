#include "pool.hpp"

#include "log.hpp"
#include "preloadrun/common/error.hpp"

namespace preloadrun::pkcs11 {

Pool::Pool(Connector connect, std::size_t max_idle, const Clock& clock)
    : connect_(std::move(connect)), max_idle_(max_idle), clock_(clock) {}

Pool::Lease::~Lease() {
    if (service_ && pool_ != nullptr) {
        pool_->give_back(std::move(service_));
    }
}

void Pool::Lease::discard() noexcept {
    service_.reset();
    if (pool_ != nullptr) {
        pool_->disrupted();
    }
}

std::unique_ptr<hsm::Service> Pool::connect() {
    try {
        return connect_();
    } catch (const Error& e) {
        // Unreachable, or the connection failed: not an error the service
        // reported (it answered), nor a protocol mismatch.
        if (e.retry() == Retry::connection) {
            note_disruption(); // the caller may hold mutex_
        }
        throw;
    }
}

bool Pool::note_instance_locked(const Bytes& instance) {
    if (instance == instance_) {
        return false;
    }
    const bool restarted = !instance_.empty();
    instance_ = instance;
    epoch_.fetch_add(1, std::memory_order_acq_rel);
    if (restarted) {
        // Everything of the old instance is gone with it: its connections
        // (the kept one too, replaced at the next acquire) and its objects.
        idle_.clear();
        kept_.reset();
        note_disruption();
        logger().warn("the HSM service restarted (a new instance answers): every module may have "
                      "been reset");
    }
    return restarted;
}

Pool::Lease Pool::acquire() {
    std::vector<std::unique_ptr<hsm::Service>> closed; // closed outside the lock
    {
        std::lock_guard lock(mutex_);
        const auto now = clock_.now();
        // The kept connection is looked at now and then while idle ones
        // serve (one check fewer per operation), and at once when none does.
        bool check_kept = !kept_ || now - kept_checked_ >= kKeptCheckInterval;
        for (;;) {
            if (check_kept) {
                reopen_kept_locked(closed);
                kept_checked_ = now;
            }
            while (!idle_.empty()) {
                auto service = std::move(idle_.back());
                idle_.pop_back();
                if (service->usable()) {
                    return Lease(*this, std::move(service));
                }
                closed.push_back(std::move(service));
            }
            if (check_kept) {
                break;
            }
            check_kept = true; // no idle connection serves: the service may have gone
        }
    }
    return fresh();
}

void Pool::reopen_kept_locked(std::vector<std::unique_ptr<hsm::Service>>& closed) {
    if (kept_ && kept_->usable()) {
        return;
    }
    // Once per epoch, or again after the service closed it as idle; the
    // callers racing it need a connection anyway.
    const bool reopened = kept_ != nullptr;
    auto kept = connect();
    if (!note_instance_locked(kept->instance()) && reopened) {
        // It must be the oldest connection of this process again, so the
        // idle ones, older, go (once it is open: what this process loaded
        // stays).
        for (auto& service : idle_) {
            closed.push_back(std::move(service));
        }
        idle_.clear();
    }
    kept_ = std::move(kept);
}

Pool::Lease Pool::fresh() {
    auto service = connect();
    {
        std::lock_guard lock(mutex_);
        if (note_instance_locked(service->instance())) {
            // The first connection of the new instance is the one kept (the
            // oldest: the service never closes it as idle).
            kept_ = std::move(service);
            service = connect();
        }
    }
    return Lease(*this, std::move(service));
}

void Pool::disrupted() noexcept {
    std::vector<std::unique_ptr<hsm::Service>> dropped; // closed outside the lock
    {
        std::lock_guard lock(mutex_);
        dropped.swap(idle_);
    }
    note_disruption();
}

void Pool::note_disruption() noexcept {
    disrupted_at_.store(clock_.now().time_since_epoch().count(), std::memory_order_release);
}

bool Pool::disrupted_since(Clock::time_point since) const noexcept {
    return disrupted_at_.load(std::memory_order_acquire) >= since.time_since_epoch().count();
}

Bytes Pool::instance() const {
    std::lock_guard lock(mutex_);
    return instance_;
}

void Pool::give_back(std::unique_ptr<hsm::Service> service) noexcept {
    std::lock_guard lock(mutex_);
    if (idle_.size() < max_idle_ && service->instance() == instance_) {
        try {
            idle_.push_back(std::move(service));
        } catch (...) {
            // Out of memory: the connection is closed instead.
        }
    }
}

} // namespace preloadrun::pkcs11
