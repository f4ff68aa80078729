#include "preloadrun/common/duration.hpp"
#include "preloadrun/common/error.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace std::chrono_literals;
using preloadrun::BareNumber;
using preloadrun::parse_duration;

namespace {

// The message of the usage error parse_duration throws for `text`.
std::string refusal(std::string_view text, BareNumber bare = BareNumber::refused) {
    try {
        parse_duration(text, bare);
    } catch (const preloadrun::Error& e) {
        CHECK(e.code() == preloadrun::ErrorCode::usage);
        return e.what();
    }
    FAIL("accepted: ", std::string(text));
    return {};
}

} // namespace

TEST_CASE("common::parse_duration") {
    SUBCASE("a number and its unit") {
        CHECK(parse_duration("1500ms") == 1500ms);
        CHECK(parse_duration("30s") == 30s);
        CHECK(parse_duration("5m") == 5min);
        CHECK(parse_duration("2h") == 2h);
        CHECK(parse_duration("0s") == 0ms);
        CHECK(parse_duration("1000000000ms") == 1'000'000'000ms);
        CHECK(parse_duration("1000000000h") == 1'000'000'000h);
    }
    SUBCASE("the same text means the same time, whatever reads it") {
        for (const char* text : {"1500ms", "30s", "5m", "2h"}) {
            CHECK(parse_duration(text, BareNumber::milliseconds) == parse_duration(text));
        }
    }
    SUBCASE("a bare number: refused on a command line, saying which units there are") {
        CHECK(refusal("300") == "'300' has no unit: write 300s, 300m, 300ms or 300h");
    }
    SUBCASE("a bare number: milliseconds where it always was (the environment)") {
        CHECK(parse_duration("300000", BareNumber::milliseconds) == 5min);
        CHECK(parse_duration("0", BareNumber::milliseconds) == 0ms);
    }
    SUBCASE("not a duration") {
        for (const char* text : {"", "soon", "ms", "-5s", "+5s", " 5s", "5 s", "1.5s", "5s ", "5S",
                                 "5min", "5sec", "5d", "1000000001ms", "99999999999999999999s"}) {
            CAPTURE(text);
            auto message = refusal(text);
            CHECK(message.find("'" + std::string(text) + "'") != std::string::npos);
            CHECK(refusal(text, BareNumber::milliseconds) == message);
        }
        CHECK(refusal("5x") == "unknown unit in '5x' (use ms, s, m or h)");
        CHECK(refusal("soon") == "'soon' is not a duration (e.g. 5m, 300s, 1500ms)");
    }
}
