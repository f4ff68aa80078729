#include "preloadrun/common/error.hpp"
#include "preloadrun/tokens/tokens_file.hpp"
#include "sample.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <nlohmann/json.hpp>

using namespace preloadrun;
using namespace preloadrun::tokens;
using nlohmann::json;

namespace {

std::string corrupt_reason(const std::string& text) {
    try {
        decode(text);
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::corrupt);
        return e.what();
    }
    FAIL("decoded: " << text);
    return {};
}

std::string mutate(const std::function<void(json&)>& change) {
    auto doc = json::parse(encode(testsupport::sample_tokens_file()));
    change(doc);
    return doc.dump();
}

} // namespace

TEST_CASE("tokens::encode and decode round trip") {
    auto original = testsupport::sample_tokens_file();
    auto text = encode(original);
    CHECK(decode(text) == original);
    SUBCASE("no token and no module") {
        TokensFile empty = original;
        empty.tokens.clear();
        empty.modules.clear();
        CHECK(decode(encode(empty)) == empty);
    }
}

TEST_CASE("tokens::ModuleState and TokenType: typed in the model, spelt once for the file") {
    for (auto state : {ModuleState::usable, ModuleState::initialising, ModuleState::failed,
                       ModuleState::removed}) {
        CHECK(module_state_named(to_string(state)) == state);
    }
    CHECK(to_string(ModuleState::initialising) == "initialising");
    CHECK_FALSE(module_state_named("sleepy"));
    CHECK(token_type_named("cardset") == TokenType::cardset);
    CHECK(to_string(TokenType::softcard) == "softcard");
    CHECK_FALSE(token_type_named("smartcard"));
    auto doc = json::parse(encode(testsupport::sample_tokens_file()));
    CHECK(doc["modules"][1]["state"] == "failed");
    CHECK(doc["tokens"][1]["type"] == "cardset");
}

TEST_CASE("tokens::decode refuses what is not a valid tokens file") {
    SUBCASE("not JSON") {
        CHECK(corrupt_reason("{\"format\":").find("not valid JSON") != std::string::npos);
    }
    SUBCASE("not an object") {
        CHECK_FALSE(corrupt_reason("[1,2]").empty());
    }
    SUBCASE("foreign format") {
        auto reason = corrupt_reason(mutate([](json& d) { d["format"] = "something-else"; }));
        CHECK(reason.find("not a preloadrun tokens file") != std::string::npos);
    }
    SUBCASE("newer version") {
        auto reason = corrupt_reason(mutate([](json& d) { d["version"] = 3; }));
        CHECK(reason.find("version 3 is not supported") != std::string::npos);
        reason = corrupt_reason(mutate([](json& d) { d["version"] = 1; }));
        CHECK(reason.find("version 1 is not supported") != std::string::npos);
    }
    SUBCASE("missing field names it") {
        auto reason = corrupt_reason(mutate([](json& d) { d["owner"].erase("boot_id"); }));
        CHECK(reason.find("boot_id") != std::string::npos);
    }
    SUBCASE("wrong types") {
        corrupt_reason(mutate([](json& d) { d["generation"] = "7"; }));
        corrupt_reason(mutate([](json& d) { d["generation"] = -1; }));
        corrupt_reason(mutate([](json& d) { d["high_availability"] = 1; }));
        corrupt_reason(mutate([](json& d) { d["tokens"] = json::object(); }));
        corrupt_reason(mutate([](json& d) { d["owner"]["pid"] = 0; }));
        corrupt_reason(mutate([](json& d) { d.erase("service_instance"); }));
        corrupt_reason(mutate([](json& d) { d["service_instance"] = "00ff"; }));
        corrupt_reason(mutate([](json& d) { d["owner"]["pid"] = 1e20; }));
    }
    SUBCASE("bad values") {
        corrupt_reason(mutate([](json& d) { d["tokens"][0]["hash"] = "abc"; }));
        corrupt_reason(mutate([](json& d) { d["tokens"][0]["type"] = "smartcard"; }));
        corrupt_reason(mutate([](json& d) { d["tokens"][0]["loaded"][0]["handle"] = 0; }));
        corrupt_reason(mutate([](json& d) { d["modules"][0]["state"] = "sleepy"; }));
        corrupt_reason(mutate([](json& d) { d["owner"]["instance"] = "xyz"; }));
    }
    SUBCASE("too many modules") {
        auto reason = corrupt_reason(mutate([](json& d) {
            for (int i = 0; i < 40; ++i) {
                d["modules"].push_back(d["modules"][0]);
            }
        }));
        CHECK(reason.find("more than 32") != std::string::npos);
    }
    SUBCASE("too large") {
        corrupt_reason(std::string(kMaxFileSize + 1, ' '));
    }
}
