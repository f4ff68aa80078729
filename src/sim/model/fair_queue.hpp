#pragma once
// The order in which a module serves the operations waiting for it: fair
// between uids by the operation time each has used, first come first served
// within one uid. Bookkeeping only, no locking and no clock: FairScheduler
// (fair_scheduler.hpp) adds both.
//
// Each uid has a virtual time: the operation time it has used on the module.
// When the module is free, the next operation is the oldest one of the
// waiting uid with the least virtual time (on a tie, the operation that came
// first). The queue's virtual time is the least virtual time of the active
// uids (with an operation waiting or running), and never goes back. A uid that
// becomes active starts at no less than it: a newcomer does not start at zero
// and cannot monopolise the module, and a uid that was idle has earned no
// credit meanwhile. A uid that used more keeps its debt until the others have
// used as much.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <sys/types.h>

namespace preloadrun::sim {

class FairQueue {
public:
    using Ticket = std::uint64_t;
    using Duration = std::chrono::nanoseconds;

    // A new operation of `uid`, waiting; its ticket.
    Ticket push(uid_t uid);
    // When no operation runs and one waits: takes the next off the queue,
    // marks it running and returns its ticket.
    std::optional<Ticket> pop();
    // The running operation ended after `used`: charged to its uid.
    void done(Duration used);

    bool busy() const noexcept { return running_.has_value(); }
    std::size_t waiting() const noexcept { return waiting_; }
    Duration virtual_time() const noexcept { return now_; }
    // The virtual time of `uid`: what it has used, and at least the queue's
    // virtual time (where an idle uid that is not ahead starts again).
    Duration virtual_time_of(uid_t uid) const;

private:
    struct User {
        Duration vtime{0};
        std::deque<Ticket> waiting;
    };

    bool active(uid_t uid, const User& user) const noexcept;
    // Moves the virtual time up to the least of the active uids, and forgets
    // idle uids that are not ahead of it (they would start there anyway).
    void advance();

    std::map<uid_t, User> users_;
    std::optional<uid_t> running_;
    std::size_t waiting_ = 0;
    Ticket next_ = 1;
    Duration now_{0};
};

} // namespace preloadrun::sim
