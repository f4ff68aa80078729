#include "ha_loop.hpp"
#include "support/fake_clock.hpp"
#include "support/fake_hsm.hpp"

#include <deque>
#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::supervisor;
using namespace std::chrono_literals;
using testsupport::FakeClock;
using testsupport::FakeHsm;

namespace {

const std::vector<hsm::TokenInfo> kTokens{{hsm::TokenType::softcard, "a", Bytes(20, 1)},
                                          {hsm::TokenType::cardset, "b", Bytes(20, 2)}};

std::vector<SecureBuffer> passphrases() {
    std::vector<SecureBuffer> out;
    out.push_back(SecureBuffer::from("pass a"));
    out.push_back(SecureBuffer::from("pass b"));
    return out;
}

// preloadrun around its HA loop, against a scripted fleet, on a fake clock.
// Work the loop hands off its thread (loads, unloads, reconnections) waits
// in `jobs` until the test runs it: nothing runs behind the test's back,
// and nothing sleeps.
struct Preloadrun {
    FakeClock clock;
    FakeHsm hsm;
    EventLoop loop{clock};
    FleetState fleet{Bytes(20, 0xab), kTokens, true};
    std::shared_ptr<Loader> loader =
        std::make_shared<Loader>([this] { return hsm.connect(); }, kTokens, passphrases(), clock);
    std::vector<tokens::TokensFile> published;
    std::deque<std::function<void()>> jobs;
    std::unique_ptr<HaLoop> ha;

    explicit Preloadrun(std::uint32_t modules = 3, std::chrono::milliseconds window = 5min)
        : hsm(modules) {
        HaLoop::Seams seams;
        seams.subscribe = [this] { return hsm.subscribe(); };
        seams.background = [this](std::function<void()> job) { jobs.push_back(std::move(job)); };
        // As run() leaves it: the tokens are loaded for this instance of the
        // service; here the HA loop loads them, from the subscription's
        // snapshot.
        fleet.set_service_instance(hsm.instance);
        ha = std::make_unique<HaLoop>(
            loop, seams, fleet, loader,
            [this] {
                published.push_back(fleet.render({self_identity(), std::string(32, 'e')}));
            },
            window);
        ha->start();
        settle();
    }

    // Runs the loop's rounds and the jobs until nothing is left to do now.
    void settle() {
        for (;;) {
            bool ran = loop.run_once(0ms);
            while (!jobs.empty()) {
                auto job = std::move(jobs.front());
                jobs.pop_front();
                job();
                ran = true;
            }
            if (!ran) {
                return;
            }
        }
    }
    // Lets time pass up to the next timer, and what it starts.
    void next_timer() {
        const auto wait = loop.time_to_next_timer();
        REQUIRE(wait.has_value());
        clock.advance(*wait);
        settle();
    }

    const tokens::TokensFile& file() const {
        REQUIRE_FALSE(published.empty());
        return published.back();
    }
    const tokens::Module& module(std::uint32_t number) const {
        for (const auto& m : file().modules) {
            if (m.number == number) {
                return m;
            }
        }
        FAIL("module " << number << " is not in the tokens file");
        throw std::logic_error("unreachable");
    }
    // The handles of every token on `number`, as the file says (empty: none).
    std::vector<std::uint64_t> handles_on(std::uint32_t number) const {
        std::vector<std::uint64_t> out;
        for (const auto& token : file().tokens) {
            for (const auto& l : token.loaded) {
                if (l.module == number) {
                    out.push_back(l.handle);
                }
            }
        }
        return out;
    }
    // Every token is in the file on `number`, at its generation now, with
    // handles the service knows there.
    bool loaded_on(std::uint32_t number) const {
        const auto handles = handles_on(number);
        if (handles.size() != kTokens.size()) {
            return false;
        }
        for (const auto& token : file().tokens) {
            for (const auto& l : token.loaded) {
                if (l.module == number && (l.module_generation != hsm.module(number).generation ||
                                           !hsm.token_loaded(number, l.handle))) {
                    return false;
                }
            }
        }
        return true;
    }
};

} // namespace

TEST_CASE("supervisor::HaLoop keeps the tokens loaded on every usable module") {
    Preloadrun pr;
    REQUIRE(pr.loaded_on(1));
    REQUIRE(pr.loaded_on(2));
    REQUIRE(pr.loaded_on(3));
    CHECK(pr.file().service_instance == to_hex(pr.hsm.instance));
    CHECK(pr.hsm.token_loads[2] == 2);

    SUBCASE("a clear: the module's handles go at once, and it is loaded again once usable") {
        const auto before = pr.handles_on(2);
        pr.hsm.clear(2);
        pr.settle();
        CHECK(pr.module(2).state == tokens::ModuleState::initialising);
        CHECK(pr.module(2).generation == 1);
        CHECK(pr.handles_on(2).empty());
        CHECK(pr.loaded_on(1));
        pr.hsm.ready(2);
        pr.settle();
        CHECK(pr.loaded_on(2));
        CHECK(pr.handles_on(2) != before);
        CHECK(pr.module(2).reloads == 2);
        CHECK(pr.loaded_on(1));
        CHECK(pr.hsm.token_loads[1] == 2); // the others are not touched
    }
    SUBCASE("a failure, then a restore") {
        pr.hsm.fail_module(1);
        pr.settle();
        CHECK(pr.module(1).state == tokens::ModuleState::failed);
        CHECK(pr.handles_on(1).empty());
        pr.hsm.restore(1);
        pr.settle();
        CHECK(pr.module(1).state == tokens::ModuleState::initialising);
        CHECK(pr.handles_on(1).empty());
        pr.hsm.ready(1);
        pr.settle();
        CHECK(pr.module(1).generation == 1);
        CHECK(pr.loaded_on(1));
    }
    SUBCASE("a module added to the fleet is loaded once usable") {
        const auto added = pr.hsm.add();
        pr.settle();
        CHECK(pr.module(added).state == tokens::ModuleState::initialising);
        CHECK(pr.handles_on(added).empty());
        pr.hsm.ready(added);
        pr.settle();
        CHECK(pr.loaded_on(added));
        CHECK(pr.file().modules.size() == 4);
    }
    SUBCASE("a removed module stays listed, without handles") {
        pr.hsm.remove(3);
        pr.settle();
        CHECK(pr.module(3).state == tokens::ModuleState::removed);
        CHECK(pr.handles_on(3).empty());
        CHECK(pr.file().modules.size() == 3);
        CHECK(pr.loaded_on(1));
    }
    SUBCASE("a load overtaken by a clear is dropped, and what it loaded unloaded") {
        pr.hsm.clear(2);
        pr.hsm.ready(2);
        pr.loop.run_once(0ms); // the events: a load of generation 1 waits in `jobs`
        REQUIRE(pr.jobs.size() == 1);
        pr.hsm.clear(2);
        pr.hsm.ready(2);
        pr.loop.run_once(0ms); // generation 2: another load
        REQUIRE(pr.jobs.size() == 2);
        const auto unloaded = pr.hsm.unloaded.size();
        pr.settle(); // the first load's result comes back for generation 1
        CHECK(pr.hsm.unloaded.size() == unloaded + kTokens.size());
        CHECK(pr.module(2).generation == 2);
        CHECK(pr.loaded_on(2));
        CHECK(pr.module(2).reloads == 2); // the stale load did not count
    }
}

TEST_CASE("supervisor::HaLoop: a restart of the HSM service is a new instance") {
    Preloadrun pr;
    const auto old_instance = pr.hsm.instance;
    pr.hsm.restart();
    pr.hsm.reachable = false; // and it takes a while to come back
    pr.settle();              // the event stream ends
    CHECK(pr.file().service_instance == to_hex(old_instance));
    pr.next_timer(); // reconnecting after 100 ms: not yet
    pr.next_timer(); // 200 ms later: not yet
    pr.hsm.reachable = true;
    pr.next_timer();
    CHECK(pr.file().service_instance == to_hex(pr.hsm.instance));
    CHECK(pr.file().service_instance != to_hex(old_instance));
    for (std::uint32_t m = 1; m <= 3; ++m) {
        CHECK(pr.loaded_on(m)); // in the new instance, at the new generations
        CHECK(pr.module(m).generation == 1);
    }
    CHECK_FALSE(pr.loop.time_to_next_timer().has_value()); // nothing more to do

    SUBCASE("the same instance again (a broken connection): what is loaded stays") {
        const auto loads = pr.hsm.token_loads[1];
        const auto files = pr.published.size();
        pr.hsm.drop_streams();
        pr.settle();
        pr.next_timer();
        CHECK(pr.hsm.token_loads[1] == loads);
        CHECK(pr.published.size() == files);
        CHECK(pr.loaded_on(1));
    }
}

TEST_CASE("supervisor::HaLoop retries a failed load for the retry window, then gives up") {
    Preloadrun pr(3, 1s);
    pr.hsm.fail[2] = ErrorCode::transient;
    pr.hsm.clear(2);
    pr.hsm.ready(2);
    pr.settle();
    CHECK(pr.handles_on(2).empty());
    CHECK_FALSE(pr.module(2).given_up);
    const auto start = pr.clock.now();
    int attempts = 1;
    while (!pr.module(2).given_up) {
        pr.next_timer();
        ++attempts;
        REQUIRE(attempts < 20);
    }
    // 100, 200 and 400 ms between the attempts, then the rest of the window.
    CHECK(attempts == 5);
    CHECK(pr.clock.now() - start == 1s);
    CHECK_FALSE(pr.loop.time_to_next_timer().has_value()); // no more attempts
    CHECK(pr.loaded_on(1));

    SUBCASE("the next change of the module tries again") {
        pr.hsm.fail.clear();
        pr.hsm.clear(2);
        pr.settle();
        CHECK_FALSE(pr.module(2).given_up);
        pr.hsm.ready(2);
        pr.settle();
        CHECK(pr.loaded_on(2));
    }
    SUBCASE("a load that succeeds within the window ends the retries") {
        pr.hsm.clear(2);
        pr.hsm.ready(2);
        pr.settle();
        pr.next_timer();
        pr.hsm.fail.clear();
        pr.next_timer();
        CHECK(pr.loaded_on(2));
        CHECK_FALSE(pr.module(2).given_up);
        CHECK_FALSE(pr.loop.time_to_next_timer().has_value());
    }
}

TEST_CASE("supervisor::HaLoop tracks 32 modules: the 33rd is refused") {
    Preloadrun pr(32);
    REQUIRE(pr.file().modules.size() == 32);
    REQUIRE(pr.loaded_on(32));
    pr.hsm.remove(5); // a removed module still counts
    const auto added = pr.hsm.add();
    pr.hsm.ready(added);
    pr.settle();
    CHECK(added == 33);
    CHECK(pr.file().modules.size() == 32);
    CHECK(pr.hsm.token_loads[33] == 0);
    CHECK(pr.module(5).state == tokens::ModuleState::removed);
}
