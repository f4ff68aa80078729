#include "core/event_loop.hpp"
#include "support/fake_clock.hpp"

#include <atomic>
#include <chrono>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <thread>
#include <unistd.h>
#include <vector>

using preloadrun::Fd;
using preloadrun::supervisor::EventLoop;
using preloadrun::supervisor::Wakeup;
using namespace std::chrono_literals;

namespace {

struct Pipe {
    Fd read;
    Fd write;
    Pipe() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
        read.reset(fds[0]);
        write.reset(fds[1]);
    }
    void put() const { REQUIRE(::write(write.get(), "x", 1) == 1); }
    void drain() const {
        char buf[64];
        while (::read(read.get(), buf, sizeof buf) > 0) {
        }
    }
};

} // namespace

TEST_CASE("EventLoop runs timers once each, in deadline order, and cancel() drops one") {
    EventLoop loop;
    std::vector<int> order;
    const auto now = std::chrono::steady_clock::now();
    loop.at(now + 30ms, [&] { order.push_back(3); });
    loop.at(now + 10ms, [&] { order.push_back(1); });
    const auto cancelled = loop.at(now + 15ms, [&] { order.push_back(99); });
    loop.at(now + 20ms, [&] { order.push_back(2); });
    loop.cancel(cancelled);
    loop.cancel(12345); // unknown: ignored
    while (order.size() < 3) {
        loop.run_once(1s);
    }
    CHECK(order == std::vector<int>{1, 2, 3});
    CHECK_FALSE(loop.time_to_next_timer().has_value());
    CHECK_FALSE(loop.run_once(20ms)); // nothing left to run
}

TEST_CASE("EventLoop timers follow the clock it was given") {
    testsupport::FakeClock clock;
    EventLoop loop(clock);
    std::vector<int> fired;
    loop.after(5min, [&] { fired.push_back(1); });
    loop.after(10min, [&] { fired.push_back(2); });
    CHECK(loop.time_to_next_timer() == std::chrono::nanoseconds(5min));
    CHECK_FALSE(loop.run_once(0ms));
    clock.advance(5min);
    CHECK(loop.time_to_next_timer() == std::chrono::nanoseconds(0));
    CHECK(loop.run_once(0ms));
    CHECK(fired == std::vector<int>{1});
    clock.advance(5min);
    loop.run_once(0ms);
    CHECK(fired == std::vector<int>{1, 2});
}

TEST_CASE("EventLoop sleeps without a timeout when there is no timer") {
    EventLoop loop;
    CHECK_FALSE(loop.time_to_next_timer().has_value());
    const auto id = loop.after(1h, [] {});
    REQUIRE(loop.time_to_next_timer().has_value());
    CHECK(*loop.time_to_next_timer() > 59min);
    loop.cancel(id);
    CHECK_FALSE(loop.time_to_next_timer().has_value());
}

TEST_CASE("EventLoop does not wake before the deadline") {
    EventLoop loop;
    bool fired = false;
    const auto start = std::chrono::steady_clock::now();
    loop.after(50ms, [&] { fired = true; });
    while (!fired) {
        loop.run_once();
    }
    CHECK(std::chrono::steady_clock::now() - start >= 50ms);
}

TEST_CASE("EventLoop::watch calls back while readable; unwatch stops it") {
    EventLoop loop;
    Pipe pipe;
    int calls = 0;
    loop.watch(pipe.read.get(), [&] {
        ++calls;
        pipe.drain();
    });
    CHECK_FALSE(loop.run_once(10ms));
    CHECK(calls == 0);
    pipe.put();
    CHECK(loop.run_once(1s));
    CHECK(calls == 1);
    loop.unwatch(pipe.read.get());
    CHECK_FALSE(loop.watching(pipe.read.get()));
    pipe.put();
    loop.run_once(20ms);
    CHECK(calls == 1);
}

TEST_CASE("EventLoop drops a descriptor closed while watched instead of spinning on it") {
    EventLoop loop;
    Pipe pipe;
    int calls = 0;
    const int fd = pipe.read.get();
    loop.watch(fd, [&] { ++calls; });
    pipe.read.reset();
    loop.run_once(10ms);
    CHECK(calls == 0);
    CHECK_FALSE(loop.watching(fd));
}

TEST_CASE("EventLoop: a callback may unwatch itself and other ready descriptors") {
    EventLoop loop;
    Pipe a;
    Pipe b;
    int a_calls = 0;
    int b_calls = 0;
    // Whichever runs first unwatches both: the other must not run.
    loop.watch(a.read.get(), [&] {
        ++a_calls;
        loop.unwatch(a.read.get());
        loop.unwatch(b.read.get());
    });
    loop.watch(b.read.get(), [&] {
        ++b_calls;
        loop.unwatch(a.read.get());
        loop.unwatch(b.read.get());
    });
    a.put();
    b.put();
    loop.run_once(1s);
    CHECK(a_calls + b_calls == 1);
}

TEST_CASE("EventLoop: a timer that re-arms itself for now runs once per round") {
    EventLoop loop;
    int runs = 0;
    std::function<void()> again = [&] {
        ++runs;
        loop.at(std::chrono::steady_clock::now(), again);
    };
    loop.at(std::chrono::steady_clock::now(), again);
    loop.run_once(0ms);
    CHECK(runs == 1);
    loop.run_once(0ms);
    CHECK(runs == 2);
}

TEST_CASE("EventLoop::run returns after stop() from a callback") {
    EventLoop loop;
    int ticks = 0;
    std::function<void()> tick = [&] {
        if (++ticks == 3) {
            loop.stop();
        } else {
            loop.after(1ms, tick);
        }
    };
    loop.after(1ms, tick);
    loop.run();
    CHECK(ticks == 3);
    CHECK_FALSE(loop.stopped()); // ready for the next run()
}

namespace {
std::atomic<int> g_interrupts{0};
void count_interrupt(int) {
    ++g_interrupts;
}
} // namespace

TEST_CASE("EventLoop survives EINTR: an interrupted poll keeps its timer") {
    struct sigaction sa {};
    struct sigaction old {};
    sa.sa_handler = count_interrupt; // no SA_RESTART (poll never restarts anyway)
    ::sigemptyset(&sa.sa_mask);
    REQUIRE(::sigaction(SIGURG, &sa, &old) == 0);
    // Other test cases block every signal, as preloadrun does.
    sigset_t urg;
    sigset_t old_mask;
    ::sigemptyset(&urg);
    ::sigaddset(&urg, SIGURG);
    REQUIRE(::pthread_sigmask(SIG_UNBLOCK, &urg, &old_mask) == 0);
    g_interrupts = 0;

    EventLoop loop;
    bool fired = false;
    // Before the timer is set: its deadline counts from then, and a loaded
    // machine may take a while to get to the next line.
    const auto start = std::chrono::steady_clock::now();
    loop.after(150ms, [&] { fired = true; });
    const pthread_t self = ::pthread_self();
    std::thread interrupter([self] {
        std::this_thread::sleep_for(30ms);
        ::pthread_kill(self, SIGURG);
    });
    while (!fired) {
        loop.run_once();
    }
    interrupter.join();
    ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
    ::sigaction(SIGURG, &old, nullptr);
    CHECK(g_interrupts == 1);
    CHECK(std::chrono::steady_clock::now() - start >= 150ms);
}

TEST_CASE("Wakeup runs work posted by other threads on the loop's thread, in order") {
    EventLoop loop;
    Wakeup wakeup(loop);
    constexpr int kPerThread = 500;
    std::vector<int> seen_a;
    std::vector<int> seen_b;
    bool other_thread = false;
    const auto loop_thread = std::this_thread::get_id();
    auto producer = [&](std::vector<int>& seen) {
        for (int i = 0; i < kPerThread; ++i) {
            wakeup.post([&seen, i, &other_thread, loop_thread] {
                other_thread = other_thread || std::this_thread::get_id() != loop_thread;
                seen.push_back(i);
            });
        }
    };
    std::thread a(producer, std::ref(seen_a));
    std::thread b(producer, std::ref(seen_b));
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while ((seen_a.size() < kPerThread || seen_b.size() < kPerThread) &&
           std::chrono::steady_clock::now() < deadline) {
        loop.run_once(100ms);
    }
    a.join();
    b.join();
    REQUIRE(seen_a.size() == kPerThread);
    REQUIRE(seen_b.size() == kPerThread);
    CHECK_FALSE(other_thread);
    for (int i = 0; i < kPerThread; ++i) {
        CHECK(seen_a[static_cast<std::size_t>(i)] == i);
        CHECK(seen_b[static_cast<std::size_t>(i)] == i);
    }
}
