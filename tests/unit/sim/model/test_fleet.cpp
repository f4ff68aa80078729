#include "fake_module.hpp"
#include "model/fleet.hpp"
#include "preloadrun/common/error.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/temp_dir.hpp"

#include <condition_variable>
#include <doctest/doctest.h>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::sim;
using hsm::ModuleAction;
using hsm::ModuleState;

namespace {

using testsupport::code_of;

struct Recorder {
    std::mutex mutex;
    std::condition_variable added;
    std::vector<FleetEvent> events;
    Fleet::Listener listener() {
        return [this](const FleetEvent& e) {
            std::lock_guard lock(mutex);
            events.push_back(e);
            added.notify_all();
        };
    }
    std::vector<FleetEvent> get() {
        std::lock_guard lock(mutex);
        return events;
    }
    // The first `count` events, once they have come (all there are after 10 s).
    std::vector<FleetEvent> wait_for(std::size_t count) {
        std::unique_lock lock(mutex);
        added.wait_for(lock, std::chrono::seconds(10), [&] { return events.size() >= count; });
        return events;
    }
};

struct Setup {
    testsupport::TempDir tmp;
    std::unique_ptr<World> world;
    std::unique_ptr<SimulatedModules> sims;
    std::unique_ptr<Fleet> fleet;
    explicit Setup(std::uint32_t modules, std::uint32_t init_delay_ms = 30) {
        world = simtest::make_world(tmp.path());
        for (std::uint32_t i = 0; i < modules; ++i) {
            world->enrol_module();
        }
        sims = std::make_unique<SimulatedModules>(*world);
        fleet =
            std::make_unique<Fleet>(*world, FleetOptions{0, init_delay_ms, {}}, sims->factory());
    }
    ModuleState state(std::uint32_t n) { return fleet->info(n).state; }
};

} // namespace

TEST_CASE("sim::Fleet starts with every enrolled module usable") {
    Setup s(3);
    auto list = s.fleet->list();
    REQUIRE(list.size() == 3);
    for (std::uint32_t i = 0; i < 3; ++i) {
        CHECK(list[i].number == i + 1);
        CHECK(list[i].state == ModuleState::usable);
        CHECK(list[i].esn == s.world->modules()[i].esn);
    }
    CHECK(code_of([&] { s.fleet->module(0); }) == ErrorCode::not_found);
    CHECK(code_of([&] { s.fleet->module(4); }) == ErrorCode::not_found);
}

TEST_CASE("sim::Fleet clear") {
    Setup s(2);
    Recorder rec;
    auto [snapshot, sub] = s.fleet->subscribe(rec.listener());
    REQUIRE(snapshot.size() == 2);
    auto& m = simtest::simulated(*s.fleet, 1);
    auto handle = m.add_token(0, kNoClient, {hsm::TokenType::softcard, "t", Bytes(20, 1)},
                              SecureBuffer::from("k"));

    auto info = s.fleet->control(1, ModuleAction::clear);
    CHECK(info.state == ModuleState::initialising);
    CHECK(info.generation == 1);
    CHECK(info.objects == 0);
    CHECK(code_of([&] { m.token(handle, 0); }) == ErrorCode::invalid_handle);
    CHECK(code_of([&] { m.operate(1000, OpKind::crypto, [] {}); }) == ErrorCode::module_not_usable);
    REQUIRE(simtest::eventually([&] { return s.state(1) == ModuleState::usable; }));
    CHECK(s.fleet->info(1).generation == 1);
    CHECK(s.state(2) == ModuleState::usable);

    REQUIRE(simtest::eventually([&] { return rec.get().size() == 2; }));
    auto events = rec.get();
    CHECK(events[0].event.sequence < events[1].event.sequence);
    CHECK(events[0].event.module.number == 1);
    CHECK(events[0].event.previous_state == ModuleState::usable);
    CHECK(events[0].event.previous_generation == 0);
    CHECK(events[0].event.module.state == ModuleState::initialising);
    CHECK(events[1].event.previous_state == ModuleState::initialising);
    CHECK(events[1].event.module.state == ModuleState::usable);
    CHECK(events[1].event.module.generation == 1);
    CHECK_FALSE(events[0].added);

    SUBCASE("two quick clears: one usable event, for the last generation") {
        s.fleet->control(1, ModuleAction::clear);
        s.fleet->control(1, ModuleAction::clear);
        REQUIRE(simtest::eventually([&] { return s.state(1) == ModuleState::usable; }));
        std::this_thread::sleep_for(std::chrono::milliseconds(80));
        auto all = rec.get();
        REQUIRE(all.size() == 5);
        CHECK(all[4].event.module.generation == 3);
        CHECK(all[4].event.module.state == ModuleState::usable);
    }
    SUBCASE("unsubscribing stops the events") {
        sub = Fleet::Subscription();
        s.fleet->control(2, ModuleAction::fail);
        CHECK(rec.get().size() == 2);
    }
}

TEST_CASE("sim::Fleet fail, restore, remove") {
    Setup s(2);
    Recorder rec;
    auto [snapshot, sub] = s.fleet->subscribe(rec.listener());

    auto info = s.fleet->control(2, ModuleAction::fail);
    CHECK(info.state == ModuleState::failed);
    CHECK(info.generation == 0);
    CHECK(code_of([&] { s.fleet->control(2, ModuleAction::clear); }) == ErrorCode::conflict);
    CHECK(s.fleet->control(2, ModuleAction::fail).state == ModuleState::failed); // no-op
    CHECK(rec.get().size() == 1);

    info = s.fleet->control(2, ModuleAction::restore);
    CHECK(info.state == ModuleState::initialising);
    CHECK(info.generation == 1);
    REQUIRE(simtest::eventually([&] { return s.state(2) == ModuleState::usable; }));
    CHECK(code_of([&] { s.fleet->control(2, ModuleAction::restore); }) == ErrorCode::conflict);

    info = s.fleet->control(1, ModuleAction::remove);
    CHECK(info.state == ModuleState::removed);
    CHECK(code_of([&] { s.fleet->control(1, ModuleAction::fail); }) == ErrorCode::conflict);
    info = s.fleet->control(1, ModuleAction::restore);
    CHECK(info.generation == 1);
    REQUIRE(simtest::eventually([&] { return s.state(1) == ModuleState::usable; }));

    SUBCASE("a module failed while initialising does not turn usable") {
        s.fleet->control(1, ModuleAction::clear);
        s.fleet->control(1, ModuleAction::fail);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        CHECK(s.state(1) == ModuleState::failed);
    }
}

TEST_CASE("sim::Fleet drain and undrain") {
    Setup s(2);
    Recorder rec;
    auto [snapshot, sub] = s.fleet->subscribe(rec.listener());

    auto info = s.fleet->control(2, ModuleAction::drain);
    CHECK(info.state == ModuleState::failed); // clients stop sending it work
    CHECK(info.drained);
    CHECK(info.generation == 0);
    REQUIRE(rec.get().size() == 1);
    CHECK(rec.get()[0].event.module.drained);
    // A drained module is drained once, and only a drained one is undrained.
    CHECK(code_of([&] { s.fleet->control(2, ModuleAction::drain); }) == ErrorCode::conflict);
    CHECK(code_of([&] { s.fleet->control(1, ModuleAction::undrain); }) == ErrorCode::conflict);
    s.fleet->control(1, ModuleAction::fail);
    CHECK(code_of([&] { s.fleet->control(1, ModuleAction::drain); }) == ErrorCode::conflict);

    info = s.fleet->control(2, ModuleAction::undrain);
    CHECK(info.state == ModuleState::initialising);
    CHECK_FALSE(info.drained);
    CHECK(info.generation == 1); // back as after a reset: its tokens are loaded again
    REQUIRE(simtest::eventually([&] { return s.state(2) == ModuleState::usable; }));
    CHECK(code_of([&] { s.fleet->control(2, ModuleAction::undrain); }) == ErrorCode::conflict);
}

TEST_CASE("sim::Fleet add enrols a module in the world") {
    Setup s(1);
    Recorder rec;
    auto [snapshot, sub] = s.fleet->subscribe(rec.listener());
    auto info = s.fleet->add();
    CHECK(info.number == 2);
    CHECK(info.state == ModuleState::initialising);
    CHECK(s.fleet->size() == 2);
    REQUIRE(s.world->modules().size() == 2);
    CHECK(s.world->modules()[1].esn == info.esn);
    REQUIRE(simtest::eventually([&] { return s.state(2) == ModuleState::usable; }));
    REQUIRE(simtest::eventually([&] { return rec.get().size() == 2; }));
    CHECK(rec.get()[0].added);
    CHECK_FALSE(rec.get()[1].added);
}

TEST_CASE("sim::Fleet enrols at most 128 modules") {
    Setup s(kMaxModules - 1, 0);
    s.fleet->add();
    CHECK(code_of([&] { s.fleet->add(); }) == ErrorCode::limit);
    CHECK(s.world->modules().size() == kMaxModules);
}

TEST_CASE("sim::Fleet latency and fail_next") {
    Setup s(1);
    CHECK(s.fleet->set_latency(1, 25).latency_ms == 25);
    CHECK(s.fleet->fail_next(1, 3).fail_next == 3);
    CHECK(s.fleet->fail_next(1, 4).fail_next == 4); // sets, does not add
    auto& m = simtest::simulated(*s.fleet, 1);
    CHECK(code_of([&] { m.operate(1000, OpKind::crypto, [] {}); }) == ErrorCode::transient);
    CHECK(s.fleet->info(1).fail_next == 3);
    CHECK(s.fleet->fail_next(1, 0).fail_next == 0); // 0 cancels what is pending
    m.operate(1000, OpKind::crypto, [] {});
}

TEST_CASE("sim::Fleet: a restart of the service is a new epoch that repeats no number") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    SimulatedModules sims(*world);
    world->enrol_module();
    world->enrol_module();
    auto token = [] { return hsm::TokenInfo{hsm::TokenType::softcard, "t", Bytes(20, 1)}; };
    Bytes first_instance;
    hsm::ObjectHandle first_handle = 0;
    {
        Fleet fleet(*world, FleetOptions{0, 0, {}}, sims.factory());
        first_instance = fleet.instance();
        CHECK(first_instance.size() == hsm::kServiceInstanceSize);
        CHECK(fleet.info(1).generation == 0); // never served before
        first_handle =
            simtest::simulated(fleet, 1).add_token(0, kNoClient, token(), SecureBuffer::from("k"));
        fleet.control(2, ModuleAction::clear); // generation 1, recorded in the world
    }
    // The same world served again, as after a restart (or a crash: the counters
    // were recorded before anything was issued).
    Fleet again(*world, FleetOptions{0, 0, {}}, sims.factory());
    CHECK(again.instance() != first_instance);
    CHECK(again.info(1).generation == 1);
    CHECK(again.info(2).generation == 2);
    const auto handle =
        simtest::simulated(again, 1).add_token(0, kNoClient, token(), SecureBuffer::from("k"));
    CHECK(handle > first_handle);
    CHECK(code_of([&] { simtest::simulated(again, 1).token(first_handle, 0); }) ==
          ErrorCode::invalid_handle);
}

TEST_CASE("sim::Fleet: handles are reserved in the world before they are issued") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    SimulatedModules sims(*world);
    world->enrol_module();
    {
        Fleet fleet(*world, FleetOptions{0, 0, {}}, sims.factory());
        REQUIRE(world->counters(1));
        CHECK(world->counters(1)->handles == 1 + kHandleBlock);
        auto added = fleet.add();
        REQUIRE(world->counters(added.number));
        CHECK(world->counters(added.number)->handles == 1 + kHandleBlock);
    }
    // Whatever was issued, the next start issues from past the reservation.
    Fleet again(*world, FleetOptions{0, 0, {}}, sims.factory());
    auto handle = simtest::simulated(again, 1).add_token(
        0, kNoClient, {hsm::TokenType::softcard, "t", Bytes(20, 1)}, SecureBuffer::from("k"));
    CHECK(handle == 1 + kHandleBlock);
    CHECK(world->counters(1)->handles == 1 + 2 * kHandleBlock);
}

namespace {

// A fleet of two modules of another kind than the simulated HSM.
struct FakeSetup {
    testsupport::TempDir tmp;
    std::unique_ptr<World> world = simtest::make_world(tmp.path());
    simtest::FakeModules fakes;
    std::unique_ptr<Fleet> fleet;
    FakeSetup() {
        world->enrol_module();
        world->enrol_module();
        fleet = std::make_unique<Fleet>(*world, FleetOptions{0, 0, {}}, fakes.factory());
    }
    std::vector<std::string> transitions(std::uint32_t number) {
        std::vector<std::string> out;
        for (const auto& call : fakes[number].calls()) {
            if (call.what.starts_with("transition")) {
                out.push_back(call.what);
            }
        }
        return out;
    }
};

} // namespace

TEST_CASE("sim::Fleet drives modules of any kind through the Module interface") {
    FakeSetup s;
    Recorder rec;
    auto [snapshot, sub] = s.fleet->subscribe(rec.listener());
    REQUIRE(snapshot.size() == 2);
    CHECK(snapshot[1].esn == s.world->modules()[1].esn);
    CHECK(snapshot[1].state == ModuleState::usable);

    auto info = s.fleet->control(1, ModuleAction::clear);
    CHECK(info.state == ModuleState::initialising);
    CHECK(info.generation == 1);
    auto events = rec.wait_for(2);
    REQUIRE(events.size() == 2);
    CHECK(events[0].event.module.state == ModuleState::initialising);
    CHECK(events[1].event.previous_state == ModuleState::initialising);
    CHECK(events[1].event.module.state == ModuleState::usable);
    CHECK(events[1].event.module.generation == 1);
    CHECK(s.transitions(1) ==
          std::vector<std::string>{"transition initialising +gen -objects", "transition usable"});
    CHECK(s.transitions(2).empty());
    CHECK(s.world->counters(1)->generation == 1); // recorded, whatever the kind

    // What a kind of module cannot do is its own error.
    CHECK(code_of([&] { s.fleet->set_latency(2, 5); }) == ErrorCode::usage);
    CHECK(code_of([&] { s.fleet->control(2, ModuleAction::restore); }) == ErrorCode::conflict);
    CHECK(s.transitions(2).empty());
}

TEST_CASE("sim::Fleet: a module that finds its device gone fails, and comes back as if reset") {
    FakeSetup s;
    Recorder rec;
    auto [snapshot, sub] = s.fleet->subscribe(rec.listener());

    s.fakes[2].report(ModuleAction::fail, "its worker process died");
    auto events = rec.wait_for(1);
    REQUIRE(events.size() == 1);
    CHECK(events[0].event.module.number == 2);
    CHECK(events[0].event.previous_state == ModuleState::usable);
    CHECK(events[0].event.module.state == ModuleState::failed);
    CHECK(events[0].event.module.generation == 0);
    CHECK(s.fleet->info(2).state == ModuleState::failed);
    s.fakes[2].report(ModuleAction::fail, "still gone"); // failed already: nothing changes

    s.fakes[2].report(ModuleAction::restore, "its token answers again");
    events = rec.wait_for(3);
    REQUIRE(events.size() == 3);
    CHECK(events[1].event.previous_state == ModuleState::failed);
    CHECK(events[1].event.module.state == ModuleState::initialising);
    CHECK(events[1].event.module.generation == 1);
    CHECK(events[2].event.module.state == ModuleState::usable);
    CHECK(events[2].event.module.generation == 1);
    CHECK(s.world->counters(2)->generation == 1);
    CHECK(s.transitions(2) == std::vector<std::string>{"transition failed -objects",
                                                       "transition initialising +gen -objects",
                                                       "transition usable"});
    CHECK(s.transitions(1).empty());

    SUBCASE("a module an admin removed stays removed whatever it reports") {
        s.fleet->control(2, ModuleAction::remove);
        REQUIRE(rec.wait_for(4).size() == 4);
        s.fakes[2].report(ModuleAction::restore, "its token answers again");
        s.fakes[2].report(ModuleAction::fail, "gone again");
        CHECK(s.fleet->info(2).state == ModuleState::removed);
        CHECK(rec.get().size() == 4);
    }
    SUBCASE("a refused report changes nothing") {
        s.fakes[1].report(ModuleAction::restore, "it was never gone");
        CHECK(s.fleet->info(1).state == ModuleState::usable);
        CHECK(rec.get().size() == 3);
    }
}
