#include "model/fair_queue.hpp"

#include <doctest/doctest.h>
#include <map>
#include <vector>

using namespace preloadrun::sim;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kA = 2001;
constexpr uid_t kB = 2000;
constexpr uid_t kC = 2002;

// Serves everything queued, each operation taking what `cost` says for its
// uid; the uids in the order served.
std::vector<uid_t> drain(FairQueue& queue, const std::map<FairQueue::Ticket, uid_t>& owners,
                         const std::map<uid_t, FairQueue::Duration>& cost) {
    std::vector<uid_t> order;
    while (auto ticket = queue.pop()) {
        const uid_t uid = owners.at(*ticket);
        order.push_back(uid);
        queue.done(cost.at(uid));
    }
    return order;
}

} // namespace

TEST_CASE("sim::FairQueue one uid is served first come first served") {
    FairQueue queue;
    auto t1 = queue.push(kA);
    auto t2 = queue.push(kA);
    auto t3 = queue.push(kA);
    CHECK(queue.waiting() == 3);
    CHECK(queue.pop() == t1);
    CHECK(queue.busy());
    CHECK_FALSE(queue.pop()); // one operation at a time
    queue.done(10ms);
    CHECK(queue.pop() == t2);
    queue.done(10ms);
    CHECK(queue.pop() == t3);
    queue.done(10ms);
    CHECK_FALSE(queue.pop());
    CHECK(queue.waiting() == 0);
    CHECK_FALSE(queue.busy());
}

TEST_CASE("sim::FairQueue a uid behind another's long queue goes next") {
    FairQueue queue;
    std::map<FairQueue::Ticket, uid_t> owners;
    // A floods the module: one running, seven waiting.
    for (int i = 0; i < 8; ++i) {
        owners[queue.push(kA)] = kA;
    }
    REQUIRE(owners.at(*queue.pop()) == kA);
    // B comes with one short operation while A's first runs.
    const auto b = queue.push(kB);
    owners[b] = kB;
    queue.done(200ms); // A's first ends
    CHECK(queue.pop() == b);
    queue.done(1ms);
    auto rest = drain(queue, owners, {{kA, 200ms}, {kB, 1ms}});
    CHECK(rest == std::vector<uid_t>(7, kA));
}

TEST_CASE("sim::FairQueue shares the module by time used, not by operations") {
    FairQueue queue;
    std::map<FairQueue::Ticket, uid_t> owners;
    for (int i = 0; i < 4; ++i) {
        owners[queue.push(kA)] = kA;
        owners[queue.push(kB)] = kB;
    }
    // A's operations take 4 times as long as B's: B gets about 4 for each of A's.
    auto order = drain(queue, owners, {{kA, 40ms}, {kB, 10ms}});
    CHECK(order == std::vector<uid_t>{kA, kB, kB, kB, kB, kA, kA, kA});
}

TEST_CASE("sim::FairQueue a uid that becomes active starts at the current virtual time") {
    FairQueue queue;
    std::map<FairQueue::Ticket, uid_t> owners;
    // A alone uses 1 s of the module.
    for (int i = 0; i < 10; ++i) {
        owners[queue.push(kA)] = kA;
    }
    drain(queue, owners, {{kA, 100ms}});
    CHECK(queue.virtual_time() == 900ms); // A was active until its last one ended
    CHECK(queue.virtual_time_of(kA) == 1000ms);

    SUBCASE("a newcomer does not start at zero: it alternates with A, not monopolises") {
        for (int i = 0; i < 3; ++i) {
            owners[queue.push(kA)] = kA;
        }
        for (int i = 0; i < 3; ++i) {
            owners[queue.push(kC)] = kC;
        }
        CHECK(queue.virtual_time_of(kC) == 1000ms);
        auto order = drain(queue, owners, {{kA, 100ms}, {kC, 100ms}});
        CHECK(order == std::vector<uid_t>{kA, kC, kA, kC, kA, kC});
    }
    SUBCASE("a uid that used more keeps its debt while another catches up") {
        owners[queue.push(kB)] = kB; // B starts at 900 ms, A is at 1000 ms
        owners[queue.push(kB)] = kB;
        owners[queue.push(kA)] = kA;
        auto order = drain(queue, owners, {{kA, 100ms}, {kB, 50ms}});
        CHECK(order == std::vector<uid_t>{kB, kB, kA});
    }
    SUBCASE("idling earns no credit") {
        // B comes long after A went idle: at the queue's virtual time, not 0.
        owners[queue.push(kB)] = kB;
        CHECK(queue.virtual_time_of(kB) == queue.virtual_time());
        CHECK(queue.virtual_time_of(kB) > 0ms);
    }
}

TEST_CASE("sim::FairQueue ties go to the operation that came first") {
    FairQueue queue;
    auto a = queue.push(kA);
    auto b = queue.push(kB);
    CHECK(queue.pop() == a);
    queue.done(0ms);
    CHECK(queue.pop() == b);
    queue.done(0ms);
}

TEST_CASE("sim::FairQueue forgets idle uids that are not ahead") {
    FairQueue queue;
    queue.push(kA);
    queue.pop();
    queue.done(10ms);
    CHECK(queue.virtual_time_of(kA) == 10ms); // idle and ahead: remembered
    queue.push(kB);
    queue.pop();
    queue.done(30ms); // B is now at 30 ms
    queue.push(kB);   // B active alone: the virtual time moves to 30 ms
    CHECK(queue.virtual_time() == 30ms);
    CHECK(queue.virtual_time_of(kA) == 30ms); // A would start at 30 ms now
}
