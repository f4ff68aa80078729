#include "router.hpp"
#include "support/fake_hsm.hpp"

#include <doctest/doctest.h>
#include <map>
#include <memory>

using namespace preloadrun;
using namespace preloadrun::pkcs11;
using testsupport::FakeHsm;
using testsupport::FakeService;

namespace {

struct Fixture {
    FakeHsm world;
    Pool pool{[this] { return std::make_unique<FakeService>(world); }};
    Group group;
    Slots slots{{}, true};
    Router router{pool, group, slots};
    KeyObject key;

    Fixture() {
        for (std::uint32_t m = 1; m <= 3; ++m) {
            group.track(m, "ESN", 0);
            group.join(m, "test");
        }
        key.info.ident = "k";
    }
    Bytes sign() {
        return router.run(key, [](hsm::Service& s, std::uint32_t m, hsm::ObjectHandle h) {
            return s.sign(m, h, {}, {});
        });
    }
};

} // namespace

TEST_CASE("pkcs11::Router") {
    Fixture fx;

    SUBCASE("operations are spread over the group, keys loaded lazily once per module") {
        for (int i = 0; i < 30; ++i) {
            fx.sign();
        }
        CHECK(fx.world.ops[1] == 10);
        CHECK(fx.world.ops[2] == 10);
        CHECK(fx.world.ops[3] == 10);
        CHECK(fx.world.loads[1] == 1);
        CHECK(fx.key.handle_on(2) == 102u);
    }
    SUBCASE("a cleared module: the operation goes elsewhere and the module leaves") {
        fx.world.fail[2] = ErrorCode::invalid_handle;
        for (int i = 0; i < 12; ++i) {
            CHECK(fx.sign() != Bytes{2});
        }
        CHECK_FALSE(fx.group.is_member(2));
        CHECK(fx.group.members() == std::vector<std::uint32_t>{1, 3});
    }
    SUBCASE("a transient failure goes elsewhere; the module stays") {
        fx.world.fail[1] = ErrorCode::transient;
        for (int i = 0; i < 6; ++i) {
            fx.sign();
        }
        CHECK(fx.group.is_member(1));
        CHECK(fx.world.ops[1] == 0);
    }
    SUBCASE("final errors reach the caller") {
        fx.world.fail[1] = fx.world.fail[2] = fx.world.fail[3] = ErrorCode::crypto;
        CHECK_THROWS_AS(fx.sign(), Error);
        CHECK(fx.group.members().size() == 3);
    }
    SUBCASE("every module gone: CKR_DEVICE_ERROR") {
        fx.world.fail[1] = fx.world.fail[2] = fx.world.fail[3] = ErrorCode::module_not_usable;
        try {
            fx.sign();
            FAIL("no error");
        } catch (const CkError& e) {
            CHECK(e.rv() == CKR_DEVICE_ERROR);
        }
        CHECK(fx.group.members().empty());
    }
    SUBCASE("a session key lives on its module only and is lost with it") {
        fx.key.session = true;
        fx.key.home_module = 3;
        fx.key.set_handle(3, 7);
        for (int i = 0; i < 3; ++i) {
            CHECK(fx.sign() == Bytes{3});
        }
        fx.world.fail[3] = ErrorCode::invalid_handle;
        try {
            fx.sign();
            FAIL("no error");
        } catch (const CkError& e) {
            CHECK(e.rv() == CKR_DEVICE_ERROR);
        }
        CHECK(fx.key.lost());
        CHECK(fx.world.ops[1] == 0);
    }
}

TEST_CASE("pkcs11::classify: what the service said is not what happened to the connection") {
    const auto peer = [](ErrorCode code) { return classify(Error(code, "said", Origin::peer)); };
    const auto local = [](ErrorCode code) { return classify(Error(code, "here")); };
    SUBCASE("io: the service's storage failed, or our socket did") {
        CHECK(peer(ErrorCode::io) == Fault::final);
        CHECK(local(ErrorCode::io) == Fault::connection);
    }
    SUBCASE("unavailable, timeout: something behind the service, or the service itself") {
        CHECK(peer(ErrorCode::unavailable) == Fault::try_elsewhere);
        CHECK(peer(ErrorCode::timeout) == Fault::try_elsewhere);
        CHECK(local(ErrorCode::unavailable) == Fault::connection);
        CHECK(local(ErrorCode::timeout) == Fault::connection);
    }
    SUBCASE("the same wherever raised") {
        for (auto* classify_as : {+peer, +local}) {
            CHECK(classify_as(ErrorCode::protocol) == Fault::connection);
            CHECK(classify_as(ErrorCode::invalid_handle) == Fault::module_gone);
            CHECK(classify_as(ErrorCode::module_not_usable) == Fault::module_gone);
            CHECK(classify_as(ErrorCode::transient) == Fault::try_elsewhere);
            CHECK(classify_as(ErrorCode::corrupt) == Fault::final);
            CHECK(classify_as(ErrorCode::crypto) == Fault::final);
        }
    }
}

TEST_CASE("pkcs11::Router: a module that does not hold the key is not used for it") {
    Fixture fx;

    SUBCASE("the others serve it, without an error, until the module is forgotten") {
        fx.world.fail[2] = ErrorCode::not_found; // "no such key here", said the service
        for (int i = 0; i < 30; ++i) {
            fx.sign();
        }
        CHECK(fx.world.ops[2] == 0);
        CHECK(fx.world.ops[1] + fx.world.ops[3] == 30);
        CHECK(fx.key.refused_on(2));
        CHECK(fx.group.is_member(2)); // it serves the other keys
        fx.world.fail.erase(2);
        fx.key.forget(2); // the module was reset
        for (int i = 0; i < 30; ++i) {
            fx.sign();
        }
        CHECK(fx.world.ops[2] > 0);
    }
    SUBCASE("no module holds it: the key's handle is invalid") {
        fx.world.fail[1] = fx.world.fail[2] = fx.world.fail[3] = ErrorCode::not_found;
        CHECK_THROWS_AS(fx.sign(), Error); // the last module's answer
        try {
            fx.sign();
            FAIL("no error");
        } catch (const CkError& e) {
            CHECK(e.rv() == CKR_KEY_HANDLE_INVALID);
        }
    }
}

TEST_CASE("pkcs11::Router: an io error from the service, an io error on the connection") {
    Fixture fx;
    fx.sign(); // the pool's connections are open
    const int connections = fx.world.made;
    for (std::uint32_t m = 1; m <= 3; ++m) {
        fx.world.fail[m] = ErrorCode::io;
    }
    const auto start = fx.pool.clock().now();

    SUBCASE("the service reports it: final, the connection and the group stay") {
        try {
            fx.sign();
            FAIL("no error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::io);
            CHECK(e.origin() == Origin::peer);
        }
        CHECK(fx.world.made == connections);
        CHECK_FALSE(fx.pool.disrupted_since(start));
        CHECK(fx.group.members().size() == 3);
    }
    SUBCASE("our socket fails: the connection is dropped, the operation tried elsewhere") {
        fx.world.fail_origin = Origin::local;
        try {
            fx.sign();
            FAIL("no error");
        } catch (const CkError& e) {
            CHECK(e.rv() == CKR_DEVICE_ERROR);
        }
        CHECK(fx.world.made > connections + 1); // one new connection per try
        CHECK(fx.pool.disrupted_since(start));
        CHECK(fx.group.members().size() == 3);
    }
}

TEST_CASE("pkcs11::Router::destroy uses the slot's token handle on a member") {
    FakeHsm world;
    Pool pool{[&world] { return std::make_unique<FakeService>(world); }};
    Group group;
    const hsm::TokenInfo card{hsm::TokenType::softcard, "card", Bytes(hsm::kTokenHashSize, 7)};
    Slots slots{{card}, true};
    Router router{pool, group, slots};
    for (std::uint32_t m = 1; m <= 3; ++m) {
        group.track(m, "ESN", 0);
        group.join(m, "test");
    }
    KeyObject key;
    key.info.ident = "k";
    key.info.token = card;
    key.slot = 1;

    SUBCASE("the token's handle on a module where it is loaded") {
        slots.set_handle(1, 2, TokenHandle{55, 0});
        router.destroy(key);
        REQUIRE(world.destroyed.size() == 1);
        CHECK(world.destroyed[0] == std::pair<std::uint32_t, hsm::ObjectHandle>{2, 55});
    }
    SUBCASE("a module that was cleared: the next one where the token is loaded") {
        slots.set_handle(1, 1, TokenHandle{11, 0});
        slots.set_handle(1, 3, TokenHandle{33, 0});
        world.fail[1] = ErrorCode::invalid_handle;
        router.destroy(key);
        REQUIRE(world.destroyed.size() == 1);
        CHECK(world.destroyed[0] == std::pair<std::uint32_t, hsm::ObjectHandle>{3, 33});
    }
    SUBCASE("a refusal reaches the caller as is") {
        slots.set_handle(1, 1, TokenHandle{11, 0});
        world.fail[1] = ErrorCode::permission;
        try {
            router.destroy(key);
            FAIL("no error");
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::permission);
        }
    }
    SUBCASE("the token loaded nowhere: CKR_DEVICE_ERROR, nothing sent") {
        try {
            router.destroy(key);
            FAIL("no error");
        } catch (const CkError& e) {
            CHECK(e.rv() == CKR_DEVICE_ERROR);
        }
        CHECK(world.destroyed.empty());
    }
}
