#include "handler_test_util.hpp"

using namespace handlertest;

namespace {

wire::Request load_keys(std::uint32_t module,
                        const std::vector<std::pair<std::string, std::uint64_t>>& keys) {
    wire::Request r;
    auto* body = r.mutable_load_keys();
    body->set_module(module);
    for (const auto& [ident, token] : keys) {
        auto* key = body->add_keys();
        key->set_ident(ident);
        key->set_token_handle(token);
    }
    return r;
}

wire::ErrorCode error_of(const wire::KeyLoads::Result& r) {
    REQUIRE(r.has_error());
    return r.error().code();
}

} // namespace

TEST_CASE("sim::Handler LoadKeys loads each key as LoadKey would, each with its own result") {
    Setup s;
    As owner{s, kVictim};
    const auto hash = owner.create_token("card", "pw");
    const auto token = owner.load_token(1, hash, "pw");
    const auto k1 = owner.generate(token);
    const auto k2 = owner.generate_key(token, 1);
    const auto module_key = owner.generate_key(0, 1).key().ident();
    const std::string unknown(40, '0');

    auto out = s.call(load_keys(1, {{k1, token},
                                    {"../etc/passwd", token},
                                    {k2.key().ident(), token},
                                    {unknown, token},
                                    {module_key, 0},
                                    {k1, 0}}),
                      kVictim);
    REQUIRE(out.has_key_loads());
    const auto& results = out.key_loads().results();
    REQUIRE(results.size() == 6);
    CHECK_FALSE(results[0].has_error());
    CHECK(error_of(results[1]) == wire::ERROR_BAD_REQUEST);
    CHECK_FALSE(results[2].has_error());
    CHECK(error_of(results[3]) == wire::ERROR_NOT_FOUND);
    CHECK_FALSE(results[4].has_error());
    CHECK(error_of(results[5]) == wire::ERROR_PERMISSION); // token-protected: needs its token
    // Each handle is a loaded key of its own that signs.
    for (int i : {0, 2, 4}) {
        CAPTURE(i);
        CHECK(results[i].handle() != 0);
        CHECK(owner.sign(1, results[i].handle()).has_data());
    }
    CHECK(results[0].handle() != results[2].handle());

    SUBCASE("another user cannot use the owner's token handle") {
        auto theirs = s.call(load_keys(1, {{k1, token}, {module_key, 0}}), kAttacker);
        REQUIRE(theirs.has_key_loads());
        CHECK(error_of(theirs.key_loads().results(0)) == wire::ERROR_PERMISSION);
        CHECK_FALSE(theirs.key_loads().results(1).has_error()); // module keys: anyone
    }
    SUBCASE("a module not usable: every key says so") {
        wire::Request clear;
        clear.mutable_control_module()->set_module(1);
        clear.mutable_control_module()->set_action(wire::MODULE_CLEAR);
        REQUIRE(s.call(clear, kAdmin).has_module());
        auto later = s.call(load_keys(1, {{module_key, 0}, {module_key, 0}}), kVictim);
        REQUIRE(later.has_key_loads());
        for (const auto& r : later.key_loads().results()) {
            CHECK(error_of(r) == wire::ERROR_MODULE_NOT_USABLE);
        }
    }
    SUBCASE("1 to 1024 keys, on a module that exists (the request fails as a whole)") {
        CHECK(error_of(s.call(load_keys(1, {}), kVictim)) == wire::ERROR_BAD_REQUEST);
        std::vector<std::pair<std::string, std::uint64_t>> many(1025, {module_key, 0});
        CHECK(error_of(s.call(load_keys(1, many), kVictim)) == wire::ERROR_BAD_REQUEST);
        CHECK(error_of(s.call(load_keys(9, {{module_key, 0}}), kVictim)) == wire::ERROR_NOT_FOUND);
        many.resize(1024);
        auto full = s.call(load_keys(2, many), kVictim);
        REQUIRE(full.has_key_loads());
        CHECK(full.key_loads().results_size() == 1024);
        CHECK(s.fleet->info(2).objects == 1024);
    }
}
