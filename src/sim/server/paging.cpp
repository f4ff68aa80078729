#include "server/paging.hpp"

#include "wire/codec.hpp"

namespace preloadrun::sim {

namespace {

// A repeated field's entry costs its tag and its length prefix on top.
constexpr std::size_t kEntryOverhead = 1 + 5;

// Adds entries to `list` while they fit; sets its next cursor when one was
// left out. `cursor_of` gives an entry's cursor.
template <class List, class Info, class Add, class Cursor>
auto page_filler(List& list, PageLimits limits, Add add, Cursor cursor_of) {
    return [&list, budget = PageBudget(limits), last = std::string(), add,
            cursor_of](const Info& info) mutable {
        auto entry = hsm::codec::to_wire(info);
        if (!budget.take(entry.ByteSizeLong() + kEntryOverhead)) {
            list.set_next(last);
            return false;
        }
        last = cursor_of(info);
        *add(list) = std::move(entry);
        return true;
    };
}

} // namespace

bool PageBudget::take(std::size_t encoded) {
    const bool first = entries_ == 0;
    if (!first && (entries_ >= limits_.max_entries || bytes_ + encoded > limits_.max_bytes)) {
        return false;
    }
    ++entries_;
    bytes_ += encoded;
    return true;
}

wire::KeyList key_page(const Catalog& catalog, std::string_view after, PageLimits limits) {
    wire::KeyList list;
    catalog.visit_keys(after, page_filler<wire::KeyList, hsm::KeyInfo>(
                                  list, limits, [](wire::KeyList& l) { return l.add_keys(); },
                                  [](const hsm::KeyInfo& key) { return key.ident; }));
    return list;
}

wire::TokenList token_page(const Catalog& catalog, std::string_view after, PageLimits limits) {
    wire::TokenList list;
    catalog.visit_tokens(after,
                         page_filler<wire::TokenList, hsm::TokenInfo>(
                             list, limits, [](wire::TokenList& l) { return l.add_tokens(); },
                             [](const hsm::TokenInfo& token) { return to_hex(token.hash); }));
    return list;
}

} // namespace preloadrun::sim
