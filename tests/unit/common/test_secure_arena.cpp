#include "preloadrun/common/log.hpp"
#include "preloadrun/common/secure_arena.hpp"
#include "preloadrun/common/secure_buffer.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <doctest/doctest.h>
#include <fstream>
#include <random>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/ostream_sink.h>
#include <sstream>
#include <string>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using preloadrun::SecureArena;
using preloadrun::SecureBuffer;

namespace {

constexpr std::size_t kChunk = 4096;

bool all_zero(const void* data, std::size_t size) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    for (std::size_t i = 0; i < size; ++i) {
        if (p[i] != 0) {
            return false;
        }
    }
    return true;
}

// The VmFlags of the mapping of this process that holds `address`.
std::vector<std::string> vm_flags_of(const void* address) {
    const auto at = reinterpret_cast<std::uintptr_t>(address);
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool inside = false;
    while (std::getline(smaps, line)) {
        unsigned long start = 0;
        unsigned long end = 0;
        if (std::sscanf(line.c_str(), "%lx-%lx ", &start, &end) == 2 &&
            line.find('-') < line.find(' ')) {
            inside = at >= start && at < end;
            continue;
        }
        if (inside && line.rfind("VmFlags:", 0) == 0) {
            std::istringstream words(line.substr(8));
            std::vector<std::string> flags;
            for (std::string flag; words >> flag;) {
                flags.push_back(flag);
            }
            return flags;
        }
    }
    FAIL("no mapping holds the address");
    return {};
}

bool has(const std::vector<std::string>& flags, const std::string& flag) {
    return std::find(flags.begin(), flags.end(), flag) != flags.end();
}

int refuse_to_lock(const void* /*data*/, std::size_t /*size*/) {
    errno = ENOMEM;
    return -1;
}

} // namespace

TEST_CASE("common::SecureArena") {
    SecureArena arena(kChunk);

    SUBCASE("allocations are zeroed, aligned and distinct") {
        void* a = arena.allocate(10);
        void* b = arena.allocate(10);
        CHECK(a != b);
        CHECK(reinterpret_cast<std::uintptr_t>(a) % SecureArena::kAlignment == 0);
        CHECK(reinterpret_cast<std::uintptr_t>(b) % SecureArena::kAlignment == 0);
        CHECK(all_zero(a, 10));
        CHECK(arena.stats().bytes_in_use == 2 * SecureArena::kAlignment);
        arena.deallocate(a, 10);
        arena.deallocate(b, 10);
        CHECK(arena.stats().bytes_in_use == 0);
    }
    SUBCASE("freed space is reused, first fit") {
        void* a = arena.allocate(100);
        void* b = arena.allocate(100);
        arena.deallocate(a, 100);
        CHECK(arena.allocate(50) == a);
        arena.deallocate(a, 50);
        arena.deallocate(b, 100);
    }
    SUBCASE("neighbouring free blocks merge") {
        void* a = arena.allocate(1000);
        void* b = arena.allocate(1000);
        void* c = arena.allocate(1000);
        arena.deallocate(a, 1000);
        arena.deallocate(c, 1000);
        arena.deallocate(b, 1000); // between the two: all three become one block
        CHECK(arena.allocate(3000) == a);
        CHECK(arena.stats().chunks == 1);
        arena.deallocate(a, 3000);
    }
    SUBCASE("released memory is wiped") {
        auto* a = static_cast<std::uint8_t*>(arena.allocate(64));
        std::memset(a, 0xa5, 64);
        arena.deallocate(a, 64);
        auto* again = static_cast<std::uint8_t*>(arena.allocate(64));
        REQUIRE(again == a);
        CHECK(all_zero(again, 64));
        arena.deallocate(again, 64);
    }
    SUBCASE("a full arena grows by a chunk, and gives an empty one back") {
        void* a = arena.allocate(3000);
        void* b = arena.allocate(3000);
        CHECK(arena.stats().chunks == 2);
        arena.deallocate(b, 3000);
        CHECK(arena.stats().chunks == 1);
        arena.deallocate(a, 3000);
        CHECK(arena.stats().chunks == 1); // the first stays for the next secret
    }
    SUBCASE("a block larger than a chunk gets a chunk of its own") {
        void* big = arena.allocate(3 * kChunk + 1);
        CHECK(arena.stats().bytes_mapped >= 4 * kChunk);
        std::memset(big, 1, 3 * kChunk + 1);
        arena.deallocate(big, 3 * kChunk + 1);
    }
    SUBCASE("many threads at once") {
        constexpr int kThreads = 8;
        constexpr int kRounds = 2000;
        std::vector<std::thread> threads;
        std::vector<int> damaged(kThreads, 0);
        for (int t = 0; t < kThreads; ++t) {
            threads.emplace_back([&arena, &damaged, t] {
                std::mt19937 rng(static_cast<unsigned>(t));
                std::vector<std::pair<std::uint8_t*, std::size_t>> held;
                for (int round = 0; round < kRounds; ++round) {
                    const std::size_t size = 1 + rng() % 700;
                    auto* p = static_cast<std::uint8_t*>(arena.allocate(size));
                    std::memset(p, t + 1, size);
                    held.emplace_back(p, size);
                    if (held.size() > 20 || rng() % 2 == 0) {
                        const std::size_t victim = rng() % held.size();
                        auto [q, n] = held[victim];
                        for (std::size_t i = 0; i < n; ++i) {
                            damaged[static_cast<std::size_t>(t)] += q[i] != t + 1 ? 1 : 0;
                        }
                        arena.deallocate(q, n);
                        held.erase(held.begin() + static_cast<std::ptrdiff_t>(victim));
                    }
                }
                for (auto [q, n] : held) {
                    arena.deallocate(q, n);
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
        CHECK(damaged == std::vector<int>(kThreads, 0));
        CHECK(arena.stats().bytes_in_use == 0);
        CHECK(arena.stats().chunks == 1);
    }
}

TEST_CASE("common::SecureArena when the system refuses to lock") {
    std::ostringstream out;
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
    preloadrun::log::use_sink(sink, spdlog::level::warn);
    {
        SecureArena arena(kChunk, &refuse_to_lock);
        void* a = arena.allocate(3000);
        void* b = arena.allocate(3000); // a second chunk, refused too
        CHECK(arena.stats().chunks == 2);
        CHECK(arena.stats().locked_chunks == 0);
        std::memset(b, 7, 3000); // still usable
        arena.deallocate(a, 3000);
        arena.deallocate(b, 3000);
    }
    preloadrun::log::use_sink(std::make_shared<spdlog::sinks::null_sink_mt>(), spdlog::level::off);
    const std::string text = out.str();
    const auto first = text.find("cannot lock");
    REQUIRE(first != std::string::npos);
    CHECK(text.find("cannot lock", first + 1) == std::string::npos); // once
    CHECK(text.find("warning") != std::string::npos);
    CHECK(text.find("ulimit -l") != std::string::npos);
}

TEST_CASE("common::SecureBuffer lives in the process's arena") {
    const auto before = SecureArena::instance().stats().bytes_in_use;
    auto secret = SecureBuffer::from("correct horse battery staple");
    CHECK(SecureArena::instance().stats().bytes_in_use == before + 32);

    SUBCASE("out of core dumps and of forked children, locked when the limit allows") {
        const auto flags = vm_flags_of(secret.data());
        CHECK(has(flags, "dd")); // MADV_DONTDUMP
        CHECK(has(flags, "wf")); // MADV_WIPEONFORK
        const auto stats = SecureArena::instance().stats();
        CHECK(has(flags, "lo") == (stats.locked_chunks == stats.chunks));
        rlimit limit{};
        REQUIRE(::getrlimit(RLIMIT_MEMLOCK, &limit) == 0);
        if (::geteuid() == 0 || limit.rlim_cur == RLIM_INFINITY) {
            CHECK(has(flags, "lo")); // nothing stops it: it must be locked
        }
    }
    SUBCASE("a forked child sees zeros, and can still use the arena") {
        const pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            const bool wiped = all_zero(secret.data(), secret.size());
            auto other = SecureBuffer::from("the child's own");
            const bool usable = other.view() == "the child's own";
            ::_exit(wiped && usable ? 0 : 1);
        }
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        CHECK(WIFEXITED(status));
        CHECK(WEXITSTATUS(status) == 0);
        CHECK(secret.view() == "correct horse battery staple"); // the parent keeps it
    }
    SUBCASE("released back to the arena") {
        secret = SecureBuffer();
        CHECK(SecureArena::instance().stats().bytes_in_use == before);
    }
}
