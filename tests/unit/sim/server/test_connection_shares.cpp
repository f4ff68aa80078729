#include "preloadrun/common/error.hpp"
#include "server/connection_shares.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

constexpr uid_t kService = 2100;

ConnectionShareLimits small() {
    ConnectionShareLimits limits;
    limits.max_connections = 10;
    limits.per_uid = 3;
    limits.reserved = 4;
    limits.max_admin = 2;
    return limits;
}

// The message of the limit error admit() throws, or "" when it admits.
std::string refusal(ConnectionShares& shares, uid_t uid, bool admin = false) {
    try {
        shares.admit(uid, admin);
        return "";
    } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::limit);
        const std::string message = e.what();
        CHECK(message.find('\n') == std::string::npos);
        return message;
    }
}

} // namespace

TEST_CASE("sim::ConnectionShares one uid gets its share, then a clear refusal") {
    ConnectionShares shares(small(), kService);
    for (int i = 0; i < 3; ++i) {
        CHECK(refusal(shares, 2001) == "");
    }
    CHECK(shares.open_of(2001) == 3);
    CHECK(refusal(shares, 2001) ==
          "uid 2001 already has 3 connections open to hsmfleet, the most one uid may (hsmfleet "
          "serve --max-connections-per-uid 3); close one or try again later");
    CHECK(shares.open_of(2001) == 3);
    // Another user still connects, and the first one again once one of its
    // connections is counted out.
    CHECK(refusal(shares, 2000) == "");
    shares.release(2001, false);
    CHECK(refusal(shares, 2001) == "");
    CHECK(shares.others_open() == 4);
    CHECK(shares.client_open() == 4);
}

TEST_CASE("sim::ConnectionShares other users together leave root and the service's user "
          "their reserve") {
    ConnectionShares shares(small(), kService);
    // 6 of 10 for the other users: two fill it.
    for (uid_t uid : {2001u, 2001u, 2001u, 2002u, 2002u, 2002u}) {
        REQUIRE(refusal(shares, uid) == "");
    }
    const auto full = refusal(shares, 2003);
    CHECK(full == "hsmfleet already serves 6 connections of users other than root and uid 2100, "
                  "all it serves them (hsmfleet serve --max-connections 10, of which 4 are kept "
                  "for root and uid 2100); try again later");
    CHECK(shares.open_of(2003) == 0);
    // The managers are counted apart from the others, and by no uid.
    for (uid_t uid : {0u, 0u, kService, kService}) {
        CHECK(refusal(shares, uid) == "");
    }
    CHECK(shares.open_of(0) == 0);
    CHECK(shares.client_open() == 10);
    CHECK(refusal(shares, 0) == "hsmfleet already serves 10 connections, the most it serves at "
                                "once (hsmfleet serve --max-connections 10); try again later");
    // Room a manager makes is not the others'.
    shares.release(0, false);
    CHECK(refusal(shares, 2003) == full);
    // The managers may take more than their reserve when the others leave
    // room; then all is taken, for everyone.
    shares.release(2002, false);
    CHECK(refusal(shares, 0) == "");
    CHECK(refusal(shares, 0) == "");
    CHECK(shares.client_open() == 10);
    CHECK(shares.others_open() == 5);
    CHECK(refusal(shares, 2003)
              .find("the most it serves at once (hsmfleet serve "
                    "--max-connections 10)") != std::string::npos);
    shares.release(kService, false);
    CHECK(refusal(shares, 2003) == "");
}

TEST_CASE("sim::ConnectionShares root may use every connection when nobody else does") {
    ConnectionShares shares(small(), 0);
    for (int i = 0; i < 10; ++i) {
        REQUIRE(refusal(shares, 0) == "");
    }
    CHECK_FALSE(refusal(shares, 0).empty());
    const auto other = refusal(shares, 2001);
    CHECK(other.find("--max-connections 10") != std::string::npos);
}

TEST_CASE("sim::ConnectionShares the admin socket has a budget of its own") {
    ConnectionShares shares(small(), kService);
    for (uid_t uid : {2001u, 2001u, 2001u, 2002u, 2002u, 2002u, 0u, 0u, 0u, 0u}) {
        REQUIRE(refusal(shares, uid) == "");
    }
    CHECK(refusal(shares, kService, true) == "");
    CHECK(refusal(shares, kService, true) == "");
    CHECK(shares.admin_open() == 2);
    CHECK(refusal(shares, kService, true) ==
          "the admin socket already serves 2 connections, the most it serves at once; try "
          "again later");
    shares.release(kService, true);
    CHECK(refusal(shares, kService, true) == "");
    CHECK(shares.client_open() == 10); // untouched by the admin socket
}

TEST_CASE("sim::ConnectionShares a release it did not count in changes nothing") {
    ConnectionShares shares(small(), kService);
    shares.release(2001, false);
    shares.release(0, false);
    shares.release(kService, true);
    CHECK(shares.client_open() == 0);
    CHECK(shares.others_open() == 0);
    CHECK(shares.admin_open() == 0);
    REQUIRE(refusal(shares, 2001) == "");
    shares.release(2002, false); // another uid's: not counted in
    CHECK(shares.open_of(2001) == 1);
    CHECK(shares.others_open() == 1);
}

TEST_CASE("sim::ConnectionShares limits that leave no share are usage errors") {
    auto usage = [](ConnectionShareLimits limits) {
        try {
            ConnectionShares shares(limits, kService);
        } catch (const Error& e) {
            CHECK(e.code() == ErrorCode::usage);
            return std::string(e.what());
        }
        return std::string();
    };
    auto limits = small();
    limits.max_connections = 4; // all reserved
    CHECK(usage(limits).find("--max-connections must be more than 4") != std::string::npos);
    limits = small();
    limits.per_uid = 7; // more than the others' 6
    CHECK(usage(limits) == "--max-connections-per-uid must be 1 to 6 (--max-connections 10 "
                           "less the 4 kept for root and the service's user)");
    limits.per_uid = 0;
    CHECK_FALSE(usage(limits).empty());
    limits.per_uid = 6; // one user may take all of the others' share, not the reserve
    CHECK(usage(limits).empty());
    limits.max_admin = 0;
    CHECK_FALSE(usage(limits).empty());
    CHECK(usage(ConnectionShareLimits{}).empty()); // the defaults: 256, 32 each, 16 kept
}
