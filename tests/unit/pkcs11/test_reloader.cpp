#include "module_fixture.hpp"

using namespace pkcs11test;

namespace {

// A module started on a live file, the application using both keys on
// every module.
struct Reloading : Module {
    explicit Reloading(std::uint32_t modules = 3) : Module(modules) {
        writer.publish();
        start();
        use_keys();
        for (std::uint32_t n = 1; n <= modules; ++n) {
            REQUIRE(keys_on(n));
        }
    }
};

} // namespace

TEST_CASE("pkcs11::Reloader follows the tokens file as the fleet changes") {
    Reloading m;
    REQUIRE(m.members() == std::vector<std::uint32_t>{1, 2, 3});

    SUBCASE("nothing changed: nothing is read, nothing reloaded") {
        const auto loads = m.hsm.loads;
        m.operation();
        CHECK(m.hsm.loads == loads);
    }
    SUBCASE("a clear: the module leaves, and comes back with the keys reloaded") {
        m.hsm.clear(2);
        m.rewritten(); // initialising, no handle there
        CHECK(m.members() == std::vector<std::uint32_t>{1, 3});
        CHECK_FALSE(m.keys_on(2));
        CHECK_FALSE(m.card_handle(2));
        m.hsm.ready(2);
        m.rewritten(); // usable, the card loaded again
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK(m.card_handle(2) == m.writer.handle_on(2));
        CHECK(m.keys_on(2));
        CHECK(m.hsm.loads[2] == 4); // both keys, twice
        CHECK(m.hsm.loads[1] == 2); // the others are not touched
    }
    SUBCASE("a clear seen only once the module is back (one rewrite)") {
        m.hsm.clear(2);
        m.hsm.ready(2);
        m.rewritten();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK(m.keys_on(2));
        CHECK(m.instance->group().record(2)->generation == 1);
    }
    SUBCASE("a failure, then a restore") {
        m.hsm.fail_module(1);
        m.rewritten();
        CHECK(m.members() == std::vector<std::uint32_t>{2, 3});
        m.hsm.restore(1);
        m.hsm.ready(1);
        m.rewritten();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK(m.keys_on(1));
    }
    SUBCASE("a module added to the fleet joins, the keys in use loaded on it") {
        const auto added = m.hsm.add();
        m.rewritten();
        CHECK(m.instance->group().record(added).has_value());
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        m.hsm.ready(added);
        m.rewritten();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3, 4});
        CHECK(m.keys_on(added));
    }
    SUBCASE("a removed module leaves") {
        m.hsm.remove(3);
        m.rewritten();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2});
        CHECK(m.instance->group().record(3).has_value()); // still tracked
    }
    SUBCASE("the file removed (preloadrun exited): what is loaded keeps serving") {
        m.writer.remove();
        m.changes->changed();
        m.operation();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK(m.keys_on(2));
    }
}

TEST_CASE("pkcs11::Reloader: every module cleared at once, the keys in use come back on each") {
    Module m(3);
    m.writer.publish();
    m.start();
    auto lease = m.instance->pool().acquire();
    for (std::uint32_t n = 1; n <= 3; ++n) {
        m.instance->router().load(*lease, *m.key("mk"), n); // the application uses mk only
    }
    for (std::uint32_t n = 1; n <= 3; ++n) {
        m.hsm.clear(n);
    }
    m.rewritten(); // no module usable, no key loaded anywhere
    CHECK(m.members().empty());
    for (std::uint32_t n = 1; n <= 3; ++n) {
        m.hsm.ready(n);
    }
    m.rewritten();
    CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
    for (std::uint32_t n = 1; n <= 3; ++n) {
        CAPTURE(n);
        CHECK(m.key("mk")->handle_on(n).has_value());
        CHECK_FALSE(m.key("tk")->handle_on(n).has_value()); // never used: loaded when first used
    }
}

TEST_CASE("pkcs11::Reloader retries a failed reload for the retry window, then abandons") {
    Reloading m; // retry window: 1 s
    m.hsm.clear(2);
    m.hsm.ready(2);
    m.writer.publish();
    m.hsm.fail[2] = ErrorCode::transient;
    m.changes->changed();
    m.operation();
    CHECK(m.members() == std::vector<std::uint32_t>{1, 3});
    m.clock.advance(500ms);
    m.operation(); // tried again: fails again
    CHECK_FALSE(m.instance->group().record(2)->abandoned);

    SUBCASE("a retry that succeeds within the window") {
        m.hsm.fail.clear();
        m.clock.advance(400ms);
        m.operation();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK(m.keys_on(2));
    }
    SUBCASE("the window passes: abandoned until the file changes again") {
        m.clock.advance(500ms);
        m.operation();
        CHECK(m.instance->group().record(2)->abandoned);
        CHECK(m.members() == std::vector<std::uint32_t>{1, 3});
        m.hsm.fail.clear();
        m.clock.advance(1h);
        m.operation(); // not tried again by itself
        CHECK(m.members() == std::vector<std::uint32_t>{1, 3});
        m.hsm.clear(2);
        m.hsm.ready(2);
        m.rewritten();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK_FALSE(m.instance->group().record(2)->abandoned);
    }
}

TEST_CASE("pkcs11::Reloader: a restart of the HSM service (a new instance)") {
    Reloading m;
    const auto old_card = m.card_handle(1);
    m.hsm.restart();

    SUBCASE("the file rewritten for the new instance: its handles are taken there") {
        m.rewritten(); // the file names an instance this process has yet to meet
        m.operation(); // the restart is gone through, the file read again
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        for (std::uint32_t n = 1; n <= 3; ++n) {
            CAPTURE(n);
            CHECK(m.card_handle(n) == m.writer.handle_on(n));
            // Gone with the old instance; the keys in use come back at once,
            // under the card's handles of the new instance.
            CHECK(m.keys_on(n));
            CHECK(m.instance->group().record(n)->generation == 1);
        }
        CHECK(m.card_handle(1) != old_card);
        m.use_keys();
        CHECK(m.keys_on(1));
    }
    SUBCASE("the file still names the old instance: its handles are not used") {
        m.instance->recover(); // an operation found the service restarted
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK_FALSE(m.card_handle(1));
        CHECK_FALSE(m.keys_on(1));
        m.clock.advance(100ms);
        m.rewritten(); // preloadrun loaded the card again, in the new instance
        CHECK(m.card_handle(1) == m.writer.handle_on(1));
        m.use_keys();
        CHECK(m.keys_on(1));
    }
}

TEST_CASE("pkcs11::Reloader tracks 32 modules: the 33rd is not used") {
    Reloading m(32);
    m.hsm.remove(1);
    const auto added = m.hsm.add();
    m.hsm.ready(added);
    m.writer.skip = {1}; // a preloadrun that sees modules 2 to 33
    m.rewritten();
    CHECK(added == 33);
    CHECK_FALSE(m.instance->group().record(33));
    CHECK(m.hsm.loads[33] == 0);
    CHECK(m.members().size() == 32); // module 1 is not in the file: it stays as it was
}
