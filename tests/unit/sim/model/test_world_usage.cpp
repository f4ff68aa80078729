#include "model/world_usage.hpp"
#include "support/errors.hpp"

#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::sim;
using testsupport::code_of;

TEST_CASE("sim::WorldUsage counts files per creator and in bytes") {
    WorldUsage usage;
    usage.record("world", WorldFile::other, std::nullopt, 100);
    usage.record("key_a", WorldFile::key, 2000, 10);
    usage.record("key_b", WorldFile::key, 2000, 10);
    usage.record("key_c", WorldFile::key, 2001, 10);
    usage.record("key_d", WorldFile::key, std::nullopt, 10); // no recorded creator
    usage.record("card_a", WorldFile::token, 2000, 50);
    CHECK(usage.keys_of(2000) == 2);
    CHECK(usage.keys_of(2001) == 1);
    CHECK(usage.keys_of(0) == 0);
    CHECK(usage.tokens_of(2000) == 1);
    CHECK(usage.bytes() == 190);

    SUBCASE("a rewritten file counts its new size once") {
        usage.record("world", WorldFile::other, std::nullopt, 40);
        CHECK(usage.bytes() == 130);
        usage.record("key_a", WorldFile::key, 2000, 12);
        CHECK(usage.keys_of(2000) == 2);
        CHECK(usage.bytes() == 132);
    }
    SUBCASE("a removed file no longer counts; removing twice is harmless") {
        usage.forget("key_a");
        usage.forget("key_a");
        usage.forget("never-there");
        CHECK(usage.keys_of(2000) == 1);
        CHECK(usage.bytes() == 180);
    }
}

TEST_CASE("sim::WorldUsage::check_room") {
    WorldLimits limits;
    limits.max_keys_per_uid = 2;
    limits.max_tokens_per_uid = 1;
    limits.max_bytes = 1000;
    WorldUsage usage(limits);
    usage.record("key_a", WorldFile::key, 2001, 100);
    usage.record("key_b", WorldFile::key, 2001, 100);
    usage.record("card_a", WorldFile::token, 2001, 100);

    std::string message;
    CHECK(code_of([&] { usage.check_room(WorldFile::key, 2001, 1); }, &message) ==
          ErrorCode::limit);
    CHECK(message.find("uid 2001") != std::string::npos);
    CHECK(message.find("--max-keys-per-uid 2") != std::string::npos);
    CHECK(code_of([&] { usage.check_room(WorldFile::token, 2001, 1); }, &message) ==
          ErrorCode::limit);
    CHECK(message.find("--max-tokens-per-uid 1") != std::string::npos);
    CHECK_NOTHROW(usage.check_room(WorldFile::key, 2000, 1));
    CHECK_NOTHROW(usage.check_room(WorldFile::token, 2000, 1));
    CHECK_NOTHROW(usage.check_room(WorldFile::key, std::nullopt, 1));
    // Bytes: 300 used of 1000.
    CHECK_NOTHROW(usage.check_room(WorldFile::key, 2000, 700));
    CHECK(code_of([&] { usage.check_room(WorldFile::key, 2000, 701); }, &message) ==
          ErrorCode::limit);
    CHECK(message.find("--max-world-mib") != std::string::npos);
    CHECK(code_of([&] { usage.check_room(WorldFile::other, std::nullopt, 701); }) ==
          ErrorCode::limit);
}

TEST_CASE("sim::WorldLimits defaults") {
    WorldLimits limits;
    CHECK(limits.max_keys_per_uid == 10000);
    CHECK(limits.max_tokens_per_uid == 1000);
    CHECK(limits.max_bytes == 256ULL * 1024 * 1024);
}
