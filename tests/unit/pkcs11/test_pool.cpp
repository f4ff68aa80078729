#include "fake_service.hpp"
#include "pkcs11/pool.hpp"

#include <doctest/doctest.h>
#include <memory>

using namespace preloadrun;
using namespace preloadrun::pkcs11;
using namespace preloadrun::pkcs11test;

TEST_CASE("pkcs11::Pool keeps a connection open from its first use, however leases end") {
    World world;
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
