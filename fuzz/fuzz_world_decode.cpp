// libFuzzer target: the files of a Security World (sim/model/world_format.hpp),
// which hsmsim reads at start and whenever a request names a token or key.
// Anything but preloadrun::Error escaping a decoder, a crash, a sanitizer
// report, or a record that does not survive encode/decode unchanged is a bug.
//
// Input: one byte naming the kind of file (the tag of kKinds; any other byte
// picks a kind too), then the file's text. A new kind of file is one line of
// kKinds.

#include "model/world_format.hpp"
#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <string_view>

namespace {

namespace sim = preloadrun::sim;
using Text = std::span<const std::uint8_t>;

std::string_view as_string(Text text) {
    return {reinterpret_cast<const char*>(text.data()), text.size()};
}

// The files kept as plain JSON text: a record that decodes encodes to a text
// that decodes to the same record (compared through its encoding).
template <auto decode, auto encode> void round_trip(Text text) {
    const auto encoded = encode(decode(as_string(text), "file"));
    if (encode(decode(encoded, "file")) != encoded) {
        std::abort();
    }
}

// The world file, whose key is located by a scan of its own so that the key
// never reaches the JSON parser: the key it finds must be the "key" member a
// JSON parser sees in the same text.
void world(Text text) {
    const auto record = sim::decode_world(text, "world");
    const auto doc = nlohmann::json::parse(text.begin(), text.end(), nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("key") || !doc["key"].is_string()) {
        std::abort();
    }
    std::string parsed = doc["key"].get<std::string>();
    std::transform(parsed.begin(), parsed.end(), parsed.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (parsed != preloadrun::to_hex(record.key.span())) {
        std::abort(); // the scan and the parser disagree on the key
    }
    const auto encoded = sim::encode_world(record);
    const auto again = sim::decode_world(encoded.span(), "world");
    if (again.id != record.id || again.key.view() != record.key.view()) {
        std::abort();
    }
}

struct Kind {
    char tag;
    void (*check)(Text text);
};

constexpr Kind kKinds[] = {
    {'w', world},
    {'m', round_trip<sim::decode_modules, sim::encode_modules>},
    {'n', round_trip<sim::decode_counters, sim::encode_counters>},
    {'c', round_trip<sim::decode_card, sim::encode_card>},
    {'k', round_trip<sim::decode_key, sim::encode_key>},
};

const Kind& kind_of(std::uint8_t tag) {
    for (const auto& kind : kKinds) {
        if (kind.tag == tag) {
            return kind;
        }
    }
    return kKinds[tag % std::size(kKinds)];
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) {
        return 0;
    }
    try {
        kind_of(data[0]).check(Text(data + 1, size - 1));
    } catch (const preloadrun::Error&) {
        // Refusing a damaged file is the expected outcome.
    }
    return 0;
}
