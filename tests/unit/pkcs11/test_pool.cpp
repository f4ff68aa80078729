#include "pool.hpp"
#include "support/fake_clock.hpp"
#include "support/fake_hsm.hpp"

#include <doctest/doctest.h>
#include <memory>

using namespace preloadrun;
using namespace preloadrun::pkcs11;
using testsupport::FakeClock;
using testsupport::FakeHsm;
using testsupport::FakeService;

TEST_CASE("pkcs11::Pool keeps a connection open from its first use, however leases end") {
    FakeHsm world;
    {
        Pool pool{[&world] { return std::make_unique<FakeService>(world); }, 1};
        CHECK(world.open == 0);

        SUBCASE("the only connection lent is found broken") {
            {
                auto lease = pool.acquire();
                lease.discard();
            }
            CHECK(world.open == 1);
        }
        SUBCASE("surplus connections are closed, the kept one is not") {
            {
                auto a = pool.acquire();
                auto b = pool.acquire();
                auto c = pool.acquire();
                CHECK(world.open == 4);
            }
            CHECK(world.open == 2); // the kept one and one idle (max_idle 1)
            {
                auto lease = pool.acquire();
                lease.discard();
            }
            CHECK(world.open == 1);
        }
        SUBCASE("the kept connection is never lent") {
            auto lease = pool.acquire();
            CHECK(world.open == 2);
            auto again = pool.acquire();
            CHECK(world.open == 3);
        }
    }
    CHECK(world.open == 0); // C_Finalize: everything closes
}

TEST_CASE("pkcs11::Pool lends no connection the service has closed") {
    FakeHsm world;
    FakeClock clock;
    Pool pool{[&world] { return std::make_unique<FakeService>(world); }, 4, clock};
    auto serial = [](const Pool::Lease& lease) {
        return dynamic_cast<FakeService&>(*lease).serial();
    };
    {
        auto a = pool.acquire(); // the kept one is made first: 0
        auto b = pool.acquire();
        CHECK(serial(a) == 1);
        CHECK(serial(b) == 2);
    }
    CHECK(world.open == 3); // the kept one, and two idle

    SUBCASE("idle connections the service closed are dropped; the kept one stays") {
        world.closed = {1};
        {
            auto lease = pool.acquire(); // 1 was given back last: dropped, 2 lent
            CHECK(serial(lease) == 2);
            CHECK(world.open == 2);
        }
        world.closed = {1, 2};
        {
            auto lease = pool.acquire(); // none usable idle: a new one
            CHECK(serial(lease) == 3);
        }
        CHECK(world.made == 4);
        CHECK(world.open == 2); // 0 (kept) and 3 (idle)
    }
    SUBCASE("a kept connection the service closed is opened again, first") {
        world.closed = {0, 1};
        clock.advance(Pool::kKeptCheckInterval);
        auto lease = pool.acquire();
        // A new kept one (3); the idle ones, older, are closed, even the
        // usable one (2), so that the kept one is the oldest again.
        CHECK(serial(lease) == 4);
        CHECK(world.made == 5);
        CHECK(world.open == 2);
        auto next = pool.acquire(); // the kept one is usable: not made again
        CHECK(serial(next) == 5);
        CHECK(world.open == 3);
    }
    SUBCASE("between two looks at the kept connection, an open idle one is lent at once") {
        world.closed = {0};
        {
            auto lease = pool.acquire(); // 1 was given back last, and is open
            CHECK(serial(lease) == 1);
            CHECK(world.made == 3); // the kept one (0) not looked at yet
        }
        world.closed = {0, 1, 2};
        // No idle connection open: the kept one is looked at at once, opened
        // again (3), and a new one lent.
        auto lease = pool.acquire();
        CHECK(serial(lease) == 4);
        CHECK(world.made == 5);
        CHECK(world.open == 2);
    }
    SUBCASE("a kept connection that cannot be opened again leaves the idle ones open") {
        world.closed = {0};
        bool reachable = false;
        Pool strict{[&] {
                        if (!reachable && world.made >= 6) {
                            throw Error(ErrorCode::unavailable, "refused");
                        }
                        return std::make_unique<FakeService>(world);
                    },
                    4, clock};
        {
            auto a = strict.acquire(); // kept: 3; lent: 4
            auto b = strict.acquire(); // 5
            CHECK(serial(b) == 5);
        }
        world.closed.insert(3);
        clock.advance(Pool::kKeptCheckInterval);
        CHECK_THROWS_AS(strict.acquire(), Error);
        CHECK(world.open == 3 + 3); // the first pool's, and 3 (closed), 4 and 5 still open
        reachable = true;
        auto lease = strict.acquire();
        CHECK(serial(lease) == 7); // kept: 6; then a new one, the idle ones gone
        CHECK(world.open == 3 + 2);
    }
}

TEST_CASE("pkcs11::Pool: a service that cannot be reached is an error, noted as a disruption") {
    int calls = 0;
    Pool pool{[&calls]() -> std::unique_ptr<hsm::Service> {
        ++calls;
        throw Error(ErrorCode::unavailable, "no service");
    }};
    const auto before = pool.clock().now();
    // The first acquire opens the kept connection with the pool locked: the
    // failure must not lock it again.
    CHECK_THROWS_AS(pool.acquire(), Error);
    CHECK_THROWS_AS(pool.acquire(), Error);
    CHECK(calls == 2);
    CHECK(pool.disrupted_since(before));
    CHECK(pool.epoch() == 0);
}

TEST_CASE("pkcs11::Pool: a new instance of the service is a new epoch") {
    FakeHsm world;
    Pool pool{[&world] { return std::make_unique<FakeService>(world); }};
    { auto lease = pool.acquire(); }
    CHECK(pool.epoch() == 1);
    CHECK(pool.instance() == world.instance);
    const auto before = pool.clock().now();
    CHECK_FALSE(pool.disrupted_since(before));
    world.instance = Bytes(hsm::kServiceInstanceSize, 2); // the service restarted
    { auto idle = pool.fresh(); }                         // tells
    CHECK(pool.epoch() == 2);
    CHECK(pool.instance() == world.instance);
    CHECK(pool.disrupted_since(before));
    // No connection of the old instance is lent again.
    auto lease = pool.acquire();
    CHECK(lease->instance() == world.instance);
}
