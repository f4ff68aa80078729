#pragma once
// Paged listings: one ListKeys or ListTokens reply holds the keys (tokens)
// after a cursor, as many as fit in a page, and the cursor of the next page.
// A page is bounded by the encoded size of its entries, well inside a frame
// (frame.hpp), and by a count; it always holds at least one entry, so a
// listing always advances. Each page reads the directory's names once and
// only the files of the entries it holds (plus one: the look-ahead that says
// whether there is a next page).

#include "model/catalog.hpp"
#include "wire.pb.h"

#include <cstddef>
#include <string_view>

namespace preloadrun::sim {

struct PageLimits {
    std::size_t max_bytes = 512 * 1024; // encoded entries; a frame holds 1 MiB
    std::size_t max_entries = 5000;
};

// Counts the entries of one page against its limits.
class PageBudget {
public:
    explicit PageBudget(PageLimits limits) : limits_(limits) {}
    // Whether one more entry of `encoded` bytes fits; if so it is counted.
    bool take(std::size_t encoded);

private:
    PageLimits limits_;
    std::size_t bytes_ = 0;
    std::size_t entries_ = 0;
};

// `after`: "" for the first page, else the `next` of the previous reply.
wire::KeyList key_page(const Catalog& catalog, std::string_view after, PageLimits limits = {});
wire::TokenList token_page(const Catalog& catalog, std::string_view after, PageLimits limits = {});

} // namespace preloadrun::sim
