#include "preloadrun/common/error.hpp"

#include <doctest/doctest.h>
#include <set>
#include <string>
#include <string_view>

using namespace preloadrun;

TEST_CASE("preloadrun::kErrorTable has one well-formed row per code") {
    std::set<std::string_view> names;
    std::set<std::string_view> texts;
    std::set<std::uint32_t> wires;
    for (std::size_t i = 0; i < kErrorCodeCount; ++i) {
        const auto code = static_cast<ErrorCode>(i);
        const ErrorInfo& row = error_info(code);
        CAPTURE(row.name);
        CHECK(row.code == code);
        CHECK(!row.name.empty());
        CHECK(!row.text.empty());
        CHECK(to_string(code) == row.text);
        names.insert(row.name);
        texts.insert(row.text);
        wires.insert(row.wire);
        // hsmsim(1): 1 failed, 2 usage, 3 cannot reach the service; never 3
        // for what the service said. preloadrun(1): 125, 126, 127.
        CHECK(row.hsmsim_local >= 1);
        CHECK(row.hsmsim_local <= 3);
        CHECK(row.hsmsim_peer >= 1);
        CHECK(row.hsmsim_peer <= 2);
        CHECK(row.spawn >= 125);
        CHECK(row.spawn <= 127);
    }
    CHECK(names.size() == kErrorCodeCount);
    CHECK(texts.size() == kErrorCodeCount);
    CHECK(wires.size() == kErrorCodeCount);
    CHECK(error_info(ErrorCode::too_many_attempts).name == "too_many_attempts");
    CHECK(to_string(ErrorCode::io) == "I/O error");
}

TEST_CASE("preloadrun::Error knows where it was raised") {
    SUBCASE("here by default") {
        const Error e(ErrorCode::io, "write: Broken pipe");
        CHECK(e.origin() == Origin::local);
        CHECK(e.retry() == Retry::connection);
    }
    SUBCASE("the same code from the peer says something else") {
        // The service's storage failed: the connection is fine.
        CHECK(Error(ErrorCode::io, "world", Origin::peer).retry() == Retry::final);
        // Something the service waited on: another module, or later.
        CHECK(Error(ErrorCode::unavailable, "x", Origin::peer).retry() == Retry::transient);
        CHECK(Error(ErrorCode::timeout, "x", Origin::peer).retry() == Retry::transient);
        CHECK(Error(ErrorCode::unavailable, "x").retry() == Retry::connection);
        CHECK(Error(ErrorCode::timeout, "x").retry() == Retry::connection);
    }
    SUBCASE("codes that mean the same wherever they were raised") {
        for (const auto code : {ErrorCode::invalid_handle, ErrorCode::module_not_usable}) {
            CHECK(Error(code, "x").retry() == Retry::module_gone);
            CHECK(Error(code, "x", Origin::peer).retry() == Retry::module_gone);
        }
        CHECK(Error(ErrorCode::protocol, "x").retry() == Retry::protocol);
        CHECK(Error(ErrorCode::protocol, "x", Origin::peer).retry() == Retry::protocol);
        CHECK(Error(ErrorCode::crypto, "x", Origin::peer).retry() == Retry::final);
    }
    SUBCASE("context added to an error keeps its code and origin") {
        const Error said(ErrorCode::io, "disk full", Origin::peer);
        const Error told(said, "HSM service at /run/x: disk full");
        CHECK(told.code() == ErrorCode::io);
        CHECK(told.origin() == Origin::peer);
        CHECK(std::string(told.what()) == "HSM service at /run/x: disk full");
    }
}

TEST_CASE("preloadrun::error_info gives each program's outcome") {
    CHECK(error_info(ErrorCode::usage).hsmsim_exit(Origin::local) == 2);
    CHECK(error_info(ErrorCode::unavailable).hsmsim_exit(Origin::local) == 3);
    CHECK(error_info(ErrorCode::unavailable).hsmsim_exit(Origin::peer) == 1);
    CHECK(error_info(ErrorCode::wrong_passphrase).hsmsim_exit(Origin::peer) == 1);
    CHECK(error_info(ErrorCode::not_found).spawn == 127);
    CHECK(error_info(ErrorCode::permission).spawn == 126);
    CHECK(error_info(ErrorCode::io).spawn == 125);
}
