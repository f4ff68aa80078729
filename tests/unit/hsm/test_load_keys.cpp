// SimClient::load_keys: one LoadKeys request per 1,024 keys, one result per
// key (the base Service::load_keys is the PKCS#11 module's tests' fake HSM's).
#include "fake_server.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::hsm;
using hsmtest::FakeServer;

namespace {

std::vector<KeyToLoad> keys_named(std::size_t n) {
    std::vector<KeyToLoad> out;
    for (std::size_t i = 0; i < n; ++i) {
        out.push_back({std::string(39, 'a') + static_cast<char>('0' + i % 10), i % 3});
    }
    return out;
}

// Answers LoadKeys: handle 1000 + the key's place in the request, except
// every seventh key, refused as not found; `drop` results fewer than asked.
wire::Response answer(const wire::Request& r, int drop = 0) {
    wire::Response out;
    if (!r.has_load_keys()) {
        return hsmtest::ok();
    }
    for (int i = 0; i < r.load_keys().keys_size() - drop; ++i) {
        auto* result = out.mutable_key_loads()->add_results();
        if (i % 7 == 6) {
            result->mutable_error()->set_code(wire::ERROR_NOT_FOUND);
            result->mutable_error()->set_message("no such key");
        } else {
            result->set_handle(1000 + static_cast<std::uint64_t>(i));
        }
    }
    return out;
}

} // namespace

TEST_CASE("hsm::SimClient::load_keys: one request per 1,024 keys, one result per key") {
    FakeServer server(hsmtest::serve([](const wire::Request& r) { return answer(r); }));
    const auto keys = keys_named(1500);
    std::vector<KeyLoadResult> results;
    {
        SimClient client(server.endpoint());
        results = client.load_keys(3, keys);
    }
    server.join();
    REQUIRE(server.error() == "");
    const auto& got = server.received();
    REQUIRE(got.size() == 3); // Hello, 1,024 keys, 476 keys
    CHECK(got[1].load_keys().module() == 3);
    CHECK(got[1].load_keys().keys_size() == 1024);
    CHECK(got[2].load_keys().keys_size() == 476);
    CHECK(got[2].load_keys().keys(0).ident() == keys[1024].ident);
    CHECK(got[2].load_keys().keys(0).token_handle() == keys[1024].token_handle);
    REQUIRE(results.size() == 1500);
    CHECK(results[0].handle == 1000);
    CHECK_FALSE(results[0].error);
    REQUIRE(results[6].error);
    CHECK(results[6].error->code() == ErrorCode::not_found);
    CHECK(results[6].error->origin() == Origin::peer);
    CHECK(results[1025].handle == 1001); // the second request's second key
}

TEST_CASE("hsm::SimClient::load_keys: an answer of the wrong size is Error(protocol)") {
    FakeServer server(hsmtest::serve([](const wire::Request& r) { return answer(r, 1); }));
    SimClient client(server.endpoint());
    try {
        client.load_keys(1, keys_named(5));
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::protocol);
    }
}
