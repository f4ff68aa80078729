#include "preloadrun/common/wiping_allocator.hpp"

#include <algorithm>
#include <cstdint>
#include <doctest/doctest.h>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

using preloadrun::SecretBytes;
using preloadrun::SecretString;
using preloadrun::WipingAllocator;

namespace {

// What the heap got back: for each block, whether it was all zero.
struct Returns {
    std::vector<bool> zeroed;
};

// std::allocator that records, before freeing, whether a block was wiped.
template <class T> struct Recorder {
    using value_type = T;
    Returns* returns = nullptr;

    explicit Recorder(Returns* r) noexcept : returns(r) {}
    template <class U> Recorder(const Recorder<U>& other) noexcept : returns(other.returns) {}

    T* allocate(std::size_t count) { return std::allocator<T>().allocate(count); }
    void deallocate(T* data, std::size_t count) noexcept {
        const auto* bytes = reinterpret_cast<const std::uint8_t*>(data);
        bool zero = true;
        for (std::size_t i = 0; i < count * sizeof(T); ++i) {
            zero = zero && bytes[i] == 0;
        }
        returns->zeroed.push_back(zero);
        std::allocator<T>().deallocate(data, count);
    }
    template <class U> bool operator==(const Recorder<U>& other) const noexcept {
        return returns == other.returns;
    }
};

using WatchedBytes =
    std::vector<std::uint8_t, WipingAllocator<std::uint8_t, Recorder<std::uint8_t>>>;
using WatchedString =
    std::basic_string<char, std::char_traits<char>, WipingAllocator<char, Recorder<char>>>;

} // namespace

TEST_CASE("common::WipingAllocator") {
    Returns returns;
    const Recorder<char> recorder(&returns);

    SUBCASE("a vector that grows wipes each buffer it leaves, and the last one") {
        {
            WatchedBytes bytes{WipingAllocator<std::uint8_t, Recorder<std::uint8_t>>(
                Recorder<std::uint8_t>(recorder))};
            for (int i = 0; i < 1000; ++i) {
                bytes.push_back(static_cast<std::uint8_t>(0x80 | i));
            }
            REQUIRE(returns.zeroed.size() > 3); // it grew several times
        }
        CHECK(returns.zeroed == std::vector<bool>(returns.zeroed.size(), true));
    }
    SUBCASE("a long string is wiped when it goes") {
        {
            WatchedString text{WipingAllocator<char, Recorder<char>>(recorder)};
            text.assign(100, 'x');
        }
        REQUIRE(returns.zeroed.size() == 1);
        CHECK(returns.zeroed[0]);
    }
    SUBCASE("rebinding keeps the upstream allocator") {
        const WipingAllocator<char, Recorder<char>> chars(recorder);
        const WipingAllocator<int, Recorder<int>> ints(chars);
        CHECK(ints.upstream().returns == &returns);
        CHECK(ints == chars);
    }
}

TEST_CASE("common::SecretBytes and SecretString work as their standard kin") {
    SecretBytes bytes{1, 2, 3};
    bytes.insert(bytes.end(), 300, 4);
    CHECK(bytes.size() == 303);
    CHECK(bytes.back() == 4);
    SecretString text = "a passphrase that is longer than the short-string buffer";
    text += "!";
    CHECK(text.size() == 57);
}

TEST_CASE("common::secure_wipe") {
    std::uint8_t data[32];
    for (auto& byte : data) {
        byte = 0xee;
    }
    preloadrun::secure_wipe(data, sizeof data);
    CHECK(std::all_of(std::begin(data), std::end(data), [](std::uint8_t b) { return b == 0; }));
    preloadrun::secure_wipe(nullptr, 0); // nothing to do, no crash
}

TEST_CASE("common::constant_time_equal") {
    const std::uint8_t a[] = {1, 2, 3, 4, 5};
    const std::uint8_t b[] = {1, 2, 3, 4, 5};
    const std::uint8_t first[] = {9, 2, 3, 4, 5};
    const std::uint8_t last[] = {1, 2, 3, 4, 6};
    CHECK(preloadrun::constant_time_equal(a, b, sizeof a));
    CHECK_FALSE(preloadrun::constant_time_equal(a, first, sizeof a));
    CHECK_FALSE(preloadrun::constant_time_equal(a, last, sizeof a));
    CHECK(preloadrun::constant_time_equal(a, last, 4)); // only the first 4 bytes compared
    CHECK(preloadrun::constant_time_equal(nullptr, nullptr, 0));
}
