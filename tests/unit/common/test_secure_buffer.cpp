#include "preloadrun/common/secure_buffer.hpp"

#include <doctest/doctest.h>
#include <utility>

using preloadrun::SecureBuffer;

TEST_CASE("common::SecureBuffer") {
    SUBCASE("holds a copy of the data") {
        auto buf = SecureBuffer::from("secret");
        CHECK(buf.size() == 6);
        CHECK(buf.view() == "secret");
    }
    SUBCASE("copy and move") {
        auto a = SecureBuffer::from("abc");
        SecureBuffer b = a;
        CHECK(b.view() == "abc");
        SecureBuffer c = std::move(a);
        CHECK(c.view() == "abc");
        CHECK(a.empty()); // NOLINT(bugprone-use-after-move): moved-from is empty by contract
        b = c;
        CHECK(b.view() == "abc");
    }
    SUBCASE("truncate wipes the tail and never grows") {
        auto buf = SecureBuffer::from("abcdef");
        buf.truncate(3);
        CHECK(buf.view() == "abc");
        CHECK(buf.data()[3] == 0);
        buf.truncate(10);
        CHECK(buf.size() == 3);
    }
    SUBCASE("empty buffer") {
        SecureBuffer empty;
        CHECK(empty.empty());
        CHECK(empty.view().empty());
    }
}
