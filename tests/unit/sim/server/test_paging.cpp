#include "server/paging.hpp"
#include "sim_test_util.hpp"
#include "support/temp_dir.hpp"
#include "wire/frame.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <set>

using namespace preloadrun;
using namespace preloadrun::sim;

namespace {

std::string store_key(World& world, const std::string& label) {
    KeyRecord r;
    r.ident = new_ident();
    r.label = label;
    r.id = Bytes(kMaxIdSize, 0x42);
    world.store_key(r, Key::generate(hsm::KeyType::ec_p256, 0), nullptr);
    return r.ident;
}

// Every page from the start; fails the test if the listing does not end.
std::vector<wire::KeyList> all_pages(const World& world, PageLimits limits) {
    std::vector<wire::KeyList> pages;
    std::string after;
    do {
        pages.push_back(key_page(world, after, limits));
        after = pages.back().next();
        REQUIRE(pages.size() < 1000);
    } while (!after.empty());
    return pages;
}

} // namespace

TEST_CASE("sim::PageBudget") {
    SUBCASE("bounded by bytes; the first entry always fits") {
        PageBudget budget(PageLimits{100, 1000});
        CHECK(budget.take(500));
        CHECK_FALSE(budget.take(1));
    }
    SUBCASE("bounded by bytes") {
        PageBudget budget(PageLimits{100, 1000});
        CHECK(budget.take(60));
        CHECK(budget.take(40));
        CHECK_FALSE(budget.take(1));
    }
    SUBCASE("bounded by count") {
        PageBudget budget(PageLimits{100000, 2});
        CHECK(budget.take(1));
        CHECK(budget.take(1));
        CHECK_FALSE(budget.take(1));
    }
}

TEST_CASE("sim::key_page") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());

    SUBCASE("an empty world: one page, no entry, no next") {
        auto page = key_page(*world, "");
        CHECK(page.keys_size() == 0);
        CHECK(page.next().empty());
    }
    SUBCASE("pages bounded by encoded bytes cover every key once") {
        std::set<std::string> made;
        for (int i = 0; i < 12; ++i) {
            made.insert(store_key(*world, std::string(kMaxLabelSize, static_cast<char>('a' + i))));
        }
        const PageLimits limits{3000, 1000}; // a few keys of ~700 bytes each
        auto pages = all_pages(*world, limits);
        CHECK(pages.size() >= 3);
        std::vector<std::string> seen;
        for (const auto& page : pages) {
            CHECK(page.keys_size() >= 1);
            std::size_t bytes = 0;
            for (const auto& k : page.keys()) {
                bytes += k.ByteSizeLong();
                seen.push_back(k.ident());
            }
            CHECK(bytes <= limits.max_bytes);
        }
        CHECK(std::is_sorted(seen.begin(), seen.end()));
        CHECK(std::set<std::string>(seen.begin(), seen.end()) == made);
        CHECK(seen.size() == made.size());
        CHECK(pages.back().next().empty());
    }
    SUBCASE("the default page fits in a frame however large the keys") {
        for (int i = 0; i < 1000; ++i) {
            store_key(*world, std::string(kMaxLabelSize, 'x'));
        }
        std::size_t total = 0;
        std::size_t listed = 0;
        for (const auto& page : all_pages(*world, PageLimits{})) {
            wire::Response response;
            *response.mutable_keys() = page;
            wire::ServerMessage message;
            *message.mutable_response() = response;
            CHECK(message.ByteSizeLong() < hsm::kMaxFrame);
            total += message.ByteSizeLong();
            listed += static_cast<std::size_t>(page.keys_size());
        }
        CHECK(listed == 1000);
        CHECK(total > 512 * 1024); // so more than one page was needed
    }
    SUBCASE("a key destroyed between pages is simply not listed") {
        std::vector<std::string> idents;
        for (int i = 0; i < 4; ++i) {
            idents.push_back(store_key(*world, "k"));
        }
        std::sort(idents.begin(), idents.end());
        auto first = key_page(*world, "", PageLimits{1 << 20, 2});
        REQUIRE(first.next() == idents[1]);
        world->destroy_key(idents[2]);
        auto second = key_page(*world, first.next(), PageLimits{1 << 20, 2});
        REQUIRE(second.keys_size() == 1);
        CHECK(second.keys(0).ident() == idents[3]);
        CHECK(second.next().empty());
    }
}

TEST_CASE("sim::token_page") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    std::set<std::string> hashes;
    for (const char* name : {"a", "b", "c", "d", "e"}) {
        auto token = world->create_token(hsm::TokenType::softcard, name, SecureBuffer::from("p"));
        hashes.insert(std::string(token.hash.begin(), token.hash.end()));
    }
    std::set<std::string> seen;
    std::string after;
    int pages = 0;
    do {
        auto page = token_page(*world, after, PageLimits{1 << 20, 2});
        ++pages;
        for (const auto& t : page.tokens()) {
            seen.insert(t.hash());
        }
        if (!page.next().empty()) {
            const auto& last = page.tokens(page.tokens_size() - 1).hash();
            CHECK(page.next() == to_hex(Bytes(last.begin(), last.end())));
        }
        after = page.next();
    } while (!after.empty() && pages < 10);
    CHECK(pages == 3);
    CHECK(seen == hashes);
}
