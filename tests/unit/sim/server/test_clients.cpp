#include "server/clients.hpp"

#include <doctest/doctest.h>
#include <stdexcept>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

struct Recorder {
    std::vector<Clients::Client> gone;
    Clients clients{[this](const Clients::Client& c) { gone.push_back(c); }};
};

} // namespace

TEST_CASE("sim::Clients a process goes with its last connection") {
    Recorder r;
    auto a1 = r.clients.connect(1000, 42);
    auto a2 = r.clients.connect(1000, 42);
    auto b = r.clients.connect(1000, 43);
    CHECK(a1.client() != kNoClient);
    CHECK(a2.client() == a1.client());
    CHECK(b.client() != a1.client());
    CHECK(r.clients.connections(42) == 2);
    CHECK(r.clients.connections(43) == 1);
    CHECK(r.clients.size() == 2);

    SUBCASE("one of two connections closing is not the process going") {
        a1.release();
        CHECK(r.gone.empty());
        CHECK(r.clients.connections(42) == 1);
        a2.release();
        REQUIRE(r.gone.size() == 1);
        CHECK(r.gone[0].id == a2.client());
        CHECK(r.gone[0].pid == 42);
        CHECK(r.gone[0].uid == 1000);
        CHECK(r.clients.connections(42) == 0);
        CHECK(r.clients.connections(43) == 1);
        CHECK(r.clients.size() == 1);
    }
    SUBCASE("a lease counts out once: released, moved or destroyed") {
        a1.release();
        a1.release();
        {
            auto moved = std::move(a2);
            a2.release(); // moved from: nothing
            CHECK(r.gone.empty());
        }
        CHECK(r.gone.size() == 1);
        Clients::Lease assigned = r.clients.connect(1000, 43);
        assigned = std::move(b); // the one it held is counted out
        CHECK(r.clients.connections(43) == 1);
        assigned = Clients::Lease();
        CHECK(r.gone.size() == 2);
        CHECK(r.gone[1].pid == 43);
    }
    SUBCASE("a process that connects again is a new client") {
        const auto before = a1.client();
        a1.release();
        a2.release();
        auto again = r.clients.connect(1000, 42);
        CHECK(again.client() != before);
        CHECK(again.client() != b.client());
        again.release();
        CHECK(r.gone.size() == 2);
    }
}

TEST_CASE("sim::Clients a failure to unload does not escape the release") {
    int calls = 0;
    Clients clients([&calls](const Clients::Client&) {
        ++calls;
        throw std::runtime_error("out of memory");
    });
    auto lease = clients.connect(1000, 42);
    CHECK_NOTHROW(lease.release());
    CHECK(calls == 1);
    CHECK(clients.size() == 0);
}

TEST_CASE("sim::Clients the oldest connection of a process that loaded keeps its objects") {
    Recorder r;
    auto first = r.clients.connect(1000, 42);
    auto second = r.clients.connect(1000, 42);
    auto other = r.clients.connect(1000, 43);
    // Nothing loaded: no connection keeps anything, all may go when idle.
    CHECK_FALSE(r.clients.keeps_objects(first));
    CHECK_FALSE(r.clients.keeps_objects(second));

    r.clients.note_loaded(42, second.client()); // loaded over any of them
    CHECK(r.clients.keeps_objects(first));
    CHECK_FALSE(r.clients.keeps_objects(second));
    CHECK_FALSE(r.clients.keeps_objects(other)); // another process

    SUBCASE("the next oldest keeps them once the oldest closes") {
        auto third = r.clients.connect(1000, 42);
        first.release();
        CHECK(r.clients.keeps_objects(second));
        CHECK_FALSE(r.clients.keeps_objects(third));
        CHECK_FALSE(r.clients.keeps_objects(first)); // released
    }
    SUBCASE("a moved lease is the same connection") {
        auto moved = std::move(first);
        CHECK(r.clients.keeps_objects(moved));
        CHECK_FALSE(r.clients.keeps_objects(first));
    }
    SUBCASE("marked for as long as the process is a client, not after") {
        first.release();
        second.release();
        REQUIRE(r.gone.size() == 1);
        auto again = r.clients.connect(1000, 42);
        CHECK_FALSE(r.clients.keeps_objects(again)); // a new client: nothing loaded yet
        r.clients.note_loaded(42, first.client());   // the client that went: ignored
        CHECK_FALSE(r.clients.keeps_objects(again));
        r.clients.note_loaded(42, again.client());
        CHECK(r.clients.keeps_objects(again));
    }
}
