#include "model/fair_scheduler.hpp"

#include <utility>

namespace preloadrun::sim {

FairScheduler::Turn::Turn(Turn&& other) noexcept
    : scheduler_(std::exchange(other.scheduler_, nullptr)), start_(other.start_) {}

FairScheduler::Turn::~Turn() {
    if (scheduler_ != nullptr) {
        scheduler_->release(start_);
    }
}

void FairScheduler::grant_locked() {
    if (auto next = queue_.pop()) {
        granted_ = *next;
        turn_cv_.notify_all();
    }
}

FairScheduler::Turn FairScheduler::acquire(uid_t uid) {
    std::unique_lock lock(mutex_);
    const auto ticket = queue_.push(uid);
    grant_locked();
    turn_cv_.wait(lock, [&] { return granted_ == ticket; });
    granted_.reset();
    return Turn(this, clock_.now());
}

void FairScheduler::release(Clock::time_point start) noexcept {
    std::lock_guard lock(mutex_);
    queue_.done(std::chrono::duration_cast<FairQueue::Duration>(clock_.now() - start));
    grant_locked();
}

std::size_t FairScheduler::waiting() const {
    std::lock_guard lock(mutex_);
    return queue_.waiting();
}

FairQueue::Duration FairScheduler::virtual_time_of(uid_t uid) const {
    std::lock_guard lock(mutex_);
    return queue_.virtual_time_of(uid);
}

} // namespace preloadrun::sim
