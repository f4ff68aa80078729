#include "model/fair_queue.hpp"

#include "preloadrun/common/error.hpp"

#include <algorithm>

namespace preloadrun::sim {

bool FairQueue::active(uid_t uid, const User& user) const noexcept {
    return !user.waiting.empty() || running_ == uid;
}

FairQueue::Ticket FairQueue::push(uid_t uid) {
    auto& user = users_[uid];
    if (!active(uid, user)) {
        user.vtime = std::max(user.vtime, now_);
    }
    const Ticket ticket = next_++;
    user.waiting.push_back(ticket);
    ++waiting_;
    advance();
    return ticket;
}

std::optional<FairQueue::Ticket> FairQueue::pop() {
    if (running_) {
        return std::nullopt;
    }
    std::map<uid_t, User>::iterator best = users_.end();
    for (auto it = users_.begin(); it != users_.end(); ++it) {
        const auto& user = it->second;
        if (user.waiting.empty()) {
            continue;
        }
        if (best == users_.end() || user.vtime < best->second.vtime ||
            (user.vtime == best->second.vtime &&
             user.waiting.front() < best->second.waiting.front())) {
            best = it;
        }
    }
    if (best == users_.end()) {
        return std::nullopt;
    }
    const Ticket ticket = best->second.waiting.front();
    best->second.waiting.pop_front();
    --waiting_;
    running_ = best->first;
    return ticket;
}

void FairQueue::done(Duration used) {
    if (!running_) {
        throw Error(ErrorCode::internal, "FairQueue::done without a running operation");
    }
    users_[*running_].vtime += std::max(used, Duration::zero());
    running_.reset();
    advance();
}

FairQueue::Duration FairQueue::virtual_time_of(uid_t uid) const {
    auto it = users_.find(uid);
    return it == users_.end() ? now_ : std::max(it->second.vtime, now_);
}

void FairQueue::advance() {
    std::optional<Duration> least;
    for (const auto& [uid, user] : users_) {
        if (active(uid, user) && (!least || user.vtime < *least)) {
            least = user.vtime;
        }
    }
    if (least) {
        now_ = std::max(now_, *least);
    }
    std::erase_if(users_, [this](const auto& entry) {
        return !active(entry.first, entry.second) && entry.second.vtime <= now_;
    });
}

} // namespace preloadrun::sim
