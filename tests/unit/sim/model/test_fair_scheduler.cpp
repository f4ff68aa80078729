#include "model/fair_scheduler.hpp"
#include "support/fake_clock.hpp"

#include <algorithm>
#include <atomic>
#include <doctest/doctest.h>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::sim;
using namespace std::chrono_literals;

namespace {

constexpr uid_t kVictim = 2000;
constexpr uid_t kAttacker = 2001;

using testsupport::FakeClock;

// Until `scheduler` has `n` operations waiting (the threads got in line).
void wait_until_waiting(const FairScheduler& scheduler, std::size_t n) {
    while (scheduler.waiting() < n) {
        std::this_thread::yield();
    }
}

} // namespace

TEST_CASE("sim::FairScheduler charges the time a turn is held, on its clock") {
    FakeClock clock;
    FairScheduler scheduler(clock);
    {
        auto turn = scheduler.acquire(kAttacker);
        clock.advance(50ms);
    }
    CHECK(scheduler.virtual_time_of(kAttacker) == 50ms);
    { auto turn = scheduler.acquire(kAttacker); }
    CHECK(scheduler.virtual_time_of(kAttacker) == 50ms);
    CHECK(scheduler.waiting() == 0);
}

TEST_CASE("sim::FairScheduler a flooding uid delays another by one operation") {
    FakeClock clock;
    FairScheduler scheduler(clock);
    std::mutex order_mutex;
    std::vector<uid_t> order;
    auto operation = [&](uid_t uid, std::chrono::milliseconds takes) {
        auto turn = scheduler.acquire(uid);
        {
            std::lock_guard lock(order_mutex);
            order.push_back(uid);
        }
        clock.advance(takes);
    };

    // The attacker's first operation holds the module while 7 more queue,
    // then the victim's one.
    std::optional<FairScheduler::Turn> running(scheduler.acquire(kAttacker));
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < 7; ++i) {
        threads.emplace_back(operation, kAttacker, 200ms);
        wait_until_waiting(scheduler, i + 1);
    }
    threads.emplace_back(operation, kVictim, 1ms);
    wait_until_waiting(scheduler, 8);
    clock.advance(200ms);
    running.reset(); // the attacker's first operation ends
    for (auto& t : threads) {
        t.join();
    }
    REQUIRE(order.size() == 8);
    CHECK(order.front() == kVictim);
    CHECK(std::count(order.begin(), order.end(), kAttacker) == 7);
}

TEST_CASE("sim::FairScheduler serves one operation at a time, every one of them") {
    FairScheduler scheduler; // the real clock
    std::atomic<int> inside{0};
    std::atomic<int> most{0};
    std::atomic<int> served{0};
    std::vector<std::thread> threads;
    for (uid_t uid = 3000; uid < 3004; ++uid) {
        for (int t = 0; t < 3; ++t) {
            threads.emplace_back([&, uid] {
                for (int i = 0; i < 50; ++i) {
                    auto turn = scheduler.acquire(uid);
                    const int now = ++inside;
                    int seen = most.load();
                    while (now > seen && !most.compare_exchange_weak(seen, now)) {
                    }
                    ++served;
                    --inside;
                }
            });
        }
    }
    for (auto& t : threads) {
        t.join();
    }
    CHECK(most.load() == 1);
    CHECK(served.load() == 4 * 3 * 50);
    CHECK(scheduler.waiting() == 0);
}
