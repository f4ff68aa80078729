#include "model/world_format.hpp"

#include "preloadrun/common/error.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace preloadrun::sim {

namespace {

using nlohmann::json;

constexpr std::string_view kWorldFormat = "hsmsim-world/1";
constexpr std::string_view kModulesFormat = "hsmsim-modules/1";
constexpr std::string_view kCountersFormat = "hsmsim-counters/1";
constexpr std::string_view kCardFormat = "hsmsim-card/1";
constexpr std::string_view kKeyFormat = "hsmsim-key/1";
constexpr std::string_view kKdf = "pbkdf2-sha256";
constexpr std::size_t kMaxBlob = 64 * 1024;

[[noreturn]] void corrupt(const std::string& file, const std::string& what) {
    throw Error(ErrorCode::corrupt, file + ": " + what);
}

json parse(std::string_view text, const std::string& file, std::string_view format) {
    json doc = json::parse(text, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
        corrupt(file, "not a JSON object (not an hsmsim Security World file?)");
    }
    auto it = doc.find("format");
    if (it == doc.end() || !it->is_string()) {
        corrupt(file, "no \"format\" tag (not an hsmsim Security World file?)");
    }
    if (it->get_ref<const std::string&>() != format) {
        corrupt(file, "format is \"" + it->get<std::string>() + "\", expected \"" +
                          std::string(format) + "\"");
    }
    return doc;
}

const std::string& get_string(const json& doc, const char* field, const std::string& file) {
    auto it = doc.find(field);
    if (it == doc.end() || !it->is_string()) {
        corrupt(file, std::string("missing or non-string field \"") + field + "\"");
    }
    return it->get_ref<const std::string&>();
}

std::uint64_t get_uint(const json& doc, const char* field, const std::string& file,
                       std::uint64_t min, std::uint64_t max) {
    auto it = doc.find(field);
    if (it == doc.end() || !it->is_number_unsigned()) {
        corrupt(file, std::string("missing or non-numeric field \"") + field + "\"");
    }
    auto value = it->get<std::uint64_t>();
    if (value < min || value > max) {
        corrupt(file, std::string("field \"") + field + "\" out of range");
    }
    return value;
}

Bytes get_hex(const json& doc, const char* field, const std::string& file, std::size_t min,
              std::size_t max) {
    const auto& text = get_string(doc, field, file);
    if (text.size() % 2 != 0 || !is_hex(text)) {
        corrupt(file, std::string("field \"") + field + "\" is not hex");
    }
    if (text.size() / 2 < min || text.size() / 2 > max) {
        corrupt(file, std::string("field \"") + field + "\" has a wrong length");
    }
    return from_hex(text);
}

hsm::TokenType token_type_from(std::string_view text, const std::string& file) {
    if (text == "softcard") {
        return hsm::TokenType::softcard;
    }
    if (text == "cardset") {
        return hsm::TokenType::cardset;
    }
    corrupt(file, "unknown token type \"" + std::string(text) + "\"");
}

hsm::KeyType key_type_from(std::string_view text, const std::string& file) {
    for (auto type : {hsm::KeyType::rsa, hsm::KeyType::ec_p256, hsm::KeyType::ec_p384,
                      hsm::KeyType::aes, hsm::KeyType::generic_secret, hsm::KeyType::object}) {
        if (text == key_type_text(type)) {
            return type;
        }
    }
    corrupt(file, "unknown key type \"" + std::string(text) + "\"");
}

std::optional<Protection> protection_from(std::string_view text, const std::string& file) {
    if (text == "module") {
        return std::nullopt;
    }
    auto colon = text.find(':');
    if (colon == std::string_view::npos) {
        corrupt(file, "bad protection \"" + std::string(text) + "\"");
    }
    Protection p;
    p.type = token_type_from(text.substr(0, colon), file);
    auto hex = text.substr(colon + 1);
    if (hex.size() != 2 * hsm::kTokenHashSize || !is_hex(hex)) {
        corrupt(file, "bad token hash in protection \"" + std::string(text) + "\"");
    }
    p.hash = from_hex(hex);
    return p;
}

// The uid that created a token or key, when the file records one. A uid is
// 32 bits, and (uid_t)-1 means "no uid" to the kernel.
std::optional<uid_t> get_creator(const json& doc, const std::string& file) {
    if (!doc.contains("creator")) {
        return std::nullopt;
    }
    return static_cast<uid_t>(get_uint(doc, "creator", file, 0, 0xfffffffeU));
}

void set_creator(json& doc, const std::optional<uid_t>& creator) {
    if (creator) {
        doc["creator"] = static_cast<std::uint64_t>(*creator);
    }
}

// A flag that is false when absent.
bool get_flag(const json& doc, const char* key, const std::string& file) {
    if (!doc.contains(key)) {
        return false;
    }
    const auto& v = doc.at(key);
    if (!v.is_boolean()) {
        corrupt(file, std::string("\"") + key + "\" is not true or false");
    }
    return v.get<bool>();
}

std::string dump(const json& doc) {
    return doc.dump(2) + "\n";
}

} // namespace

std::string_view token_type_text(hsm::TokenType type) {
    return type == hsm::TokenType::cardset ? "cardset" : "softcard";
}

std::string token_label(const hsm::TokenInfo& token) {
    std::string text(token_type_text(token.type));
    if (!token.name.empty()) {
        text += " '" + token.name + "'";
    }
    return text + " (hash " + to_hex(token.hash) + ")";
}

std::string_view key_type_text(hsm::KeyType type) {
    switch (type) {
    case hsm::KeyType::rsa:
        return "rsa";
    case hsm::KeyType::ec_p256:
        return "ec-p256";
    case hsm::KeyType::ec_p384:
        return "ec-p384";
    case hsm::KeyType::aes:
        return "aes";
    case hsm::KeyType::generic_secret:
        return "generic-secret";
    case hsm::KeyType::object:
        return "object";
    }
    return "unknown";
}

std::string protection_text(const std::optional<Protection>& protection) {
    if (!protection) {
        return "module";
    }
    return std::string(token_type_text(protection->type)) + ":" + to_hex(protection->hash);
}

bool valid_token_name(std::string_view name) noexcept {
    return !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
               c == '.' || c == '_' || c == '-';
    });
}

bool valid_ident(std::string_view ident) noexcept {
    return ident.size() == 2 * kIdentSize && std::all_of(ident.begin(), ident.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
}

namespace {

// Appends `text` to `out` at `at`; returns the new position.
std::size_t put(SecureBuffer& out, std::size_t at, std::string_view text) {
    std::copy(text.begin(), text.end(), out.data() + at);
    return at + text.size();
}

// Where the string value of the top-level member "key" lies in a JSON
// object's text (the characters between its quotes), found without copying
// it. A lenient scan: the text is parsed for real afterwards, key blanked.
// nullopt when there is no such member (or more than one, or it is not a
// plain string), and when a member's name at that level holds an escape: it
// could spell "key" in a way this scan does not see, and a JSON reader would
// then find another key than this scan.
std::optional<std::pair<std::size_t, std::size_t>>
key_value_span(std::span<const std::uint8_t> text) {
    std::optional<std::pair<std::size_t, std::size_t>> found;
    int depth = 0;
    bool expect_name = false;  // at depth 1, after '{' or ','
    bool value_of_key = false; // the value that follows is the "key" member's
    for (std::size_t i = 0; i < text.size(); ++i) {
        const auto c = text[i];
        if (c == '"') {
            const std::size_t begin = i + 1;
            bool escaped = false;
            std::size_t end = begin;
            for (; end < text.size() && text[end] != '"'; ++end) {
                if (text[end] == '\\') {
                    escaped = true;
                    ++end;
                }
            }
            if (end >= text.size()) {
                return std::nullopt;
            }
            const std::string_view token(reinterpret_cast<const char*>(text.data()) + begin,
                                         end - begin);
            if (depth == 1 && expect_name) {
                if (escaped) {
                    return std::nullopt;
                }
                value_of_key = token == "key";
                expect_name = false;
            } else if (depth == 1 && value_of_key) {
                if (found || escaped) {
                    return std::nullopt;
                }
                found = std::pair{begin, end};
                value_of_key = false;
            }
            i = end;
        } else if (c == '{' || c == '[') {
            ++depth;
            expect_name = depth == 1 && c == '{';
        } else if (c == '}' || c == ']') {
            --depth;
        } else if (c == ',' && depth == 1) {
            expect_name = true;
            value_of_key = false;
        }
    }
    return found;
}

} // namespace

SecureBuffer encode_world(const WorldRecord& record) {
    const std::string head = "{\n  \"format\": \"" + std::string(kWorldFormat) +
                             "\",\n  \"id\": \"" + to_hex(record.id) + "\",\n  \"key\": \"";
    const std::string_view tail = "\"\n}\n";
    SecureBuffer out(head.size() + 2 * record.key.size() + tail.size());
    std::size_t at = put(out, 0, head);
    to_hex_into(record.key.span(),
                {reinterpret_cast<char*>(out.data()) + at, 2 * record.key.size()});
    put(out, at + 2 * record.key.size(), tail);
    return out;
}

WorldRecord decode_world(std::span<const std::uint8_t> text, const std::string& file) {
    const auto key = key_value_span(text);
    if (!key) {
        corrupt(file, "missing or non-string field \"key\"");
    }
    const auto [begin, end] = *key;
    // The parser checks everything else on a copy whose key is blanked.
    std::string blanked(reinterpret_cast<const char*>(text.data()), begin);
    blanked.append(end - begin, '0');
    blanked.append(reinterpret_cast<const char*>(text.data()) + end, text.size() - end);
    json doc = parse(blanked, file, kWorldFormat);
    WorldRecord record;
    record.id = get_hex(doc, "id", file, kWorldIdSize, kWorldIdSize);
    (void)get_hex(doc, "key", file, kWorldKeySize, kWorldKeySize); // the member, as parsed
    if (end - begin != 2 * kWorldKeySize) {
        corrupt(file, "field \"key\" has a wrong length");
    }
    record.key = SecureBuffer(kWorldKeySize);
    const std::string_view hex(reinterpret_cast<const char*>(text.data()) + begin, end - begin);
    if (!from_hex_into(hex, {record.key.data(), record.key.size()})) {
        corrupt(file, "field \"key\" is not hex");
    }
    return record;
}

std::string encode_modules(const std::vector<EnrolledModule>& modules) {
    json list = json::array();
    for (const auto& m : modules) {
        list.push_back({{"number", m.number}, {"esn", m.esn}});
    }
    return dump({{"format", kModulesFormat}, {"modules", list}});
}

std::vector<EnrolledModule> decode_modules(std::string_view text, const std::string& file) {
    json doc = parse(text, file, kModulesFormat);
    auto it = doc.find("modules");
    if (it == doc.end() || !it->is_array()) {
        corrupt(file, "missing \"modules\" list");
    }
    std::vector<EnrolledModule> modules;
    for (const auto& entry : *it) {
        if (!entry.is_object()) {
            corrupt(file, "a module entry is not an object");
        }
        EnrolledModule m;
        m.number = static_cast<std::uint32_t>(get_uint(entry, "number", file, 1, 1024));
        m.esn = get_string(entry, "esn", file);
        if (m.number != modules.size() + 1) {
            corrupt(file, "module numbers are not 1, 2, 3, ... in order");
        }
        if (m.esn.empty() || m.esn.size() > 64) {
            corrupt(file, "bad ESN for module " + std::to_string(m.number));
        }
        modules.push_back(std::move(m));
    }
    return modules;
}

std::string encode_counters(const std::vector<ModuleCounters>& counters) {
    json list = json::array();
    for (const auto& c : counters) {
        list.push_back(
            {{"number", c.number}, {"generation", c.generation}, {"handles", c.handles}});
    }
    return dump({{"format", kCountersFormat}, {"modules", list}});
}

std::vector<ModuleCounters> decode_counters(std::string_view text, const std::string& file) {
    json doc = parse(text, file, kCountersFormat);
    auto it = doc.find("modules");
    if (it == doc.end() || !it->is_array()) {
        corrupt(file, "missing \"modules\" list");
    }
    std::vector<ModuleCounters> counters;
    for (const auto& entry : *it) {
        if (!entry.is_object()) {
            corrupt(file, "a module entry is not an object");
        }
        ModuleCounters c;
        c.number = static_cast<std::uint32_t>(get_uint(entry, "number", file, 1, 1024));
        c.generation = get_uint(entry, "generation", file, 0, kMaxCounter);
        c.handles = get_uint(entry, "handles", file, 1, kMaxCounter);
        if (!counters.empty() && c.number <= counters.back().number) {
            corrupt(file, "module numbers are not in increasing order");
        }
        counters.push_back(c);
    }
    return counters;
}

std::string encode_card(const CardRecord& r) {
    json doc = {{"format", kCardFormat},
                {"type", token_type_text(r.type)},
                {"name", r.name},
                {"hash", to_hex(r.hash)},
                {"kdf", kKdf},
                {"iterations", r.iterations},
                {"salt", to_hex(r.salt)},
                {"wrapped_key", to_hex(r.wrapped_key)}};
    set_creator(doc, r.creator);
    return dump(doc);
}

CardRecord decode_card(std::string_view text, const std::string& file) {
    json doc = parse(text, file, kCardFormat);
    CardRecord r;
    r.type = token_type_from(get_string(doc, "type", file), file);
    r.name = get_string(doc, "name", file);
    if (!valid_token_name(r.name)) {
        corrupt(file, "invalid token name");
    }
    r.hash = get_hex(doc, "hash", file, hsm::kTokenHashSize, hsm::kTokenHashSize);
    if (get_string(doc, "kdf", file) != kKdf) {
        corrupt(file, "unsupported kdf \"" + get_string(doc, "kdf", file) + "\"");
    }
    r.iterations =
        static_cast<std::uint32_t>(get_uint(doc, "iterations", file, 1, kMaxKdfIterations));
    r.salt = get_hex(doc, "salt", file, 8, 64);
    r.wrapped_key = get_hex(doc, "wrapped_key", file, 1, kMaxBlob);
    r.creator = get_creator(doc, file);
    return r;
}

std::string encode_key(const KeyRecord& r) {
    json doc = {{"format", kKeyFormat},
                {"ident", r.ident},
                {"label", r.label},
                {"id", to_hex(r.id)},
                {"type", key_type_text(r.type)},
                {"bits", r.bits},
                {"protection", protection_text(r.protection)},
                {"public", to_hex(r.public_der)},
                {"wrapped_private", to_hex(r.wrapped_private)}};
    set_creator(doc, r.creator);
    // Written only when true: the files of other keys stay as they were.
    if (r.extractable) {
        doc["extractable"] = true;
    }
    if (r.imported) {
        doc["imported"] = true;
    }
    if (!r.check_value.empty()) {
        doc["check_value"] = to_hex(r.check_value);
    }
    return dump(doc);
}

KeyRecord decode_key(std::string_view text, const std::string& file) {
    json doc = parse(text, file, kKeyFormat);
    KeyRecord r;
    r.ident = get_string(doc, "ident", file);
    if (!valid_ident(r.ident)) {
        corrupt(file, "invalid ident");
    }
    r.label = get_string(doc, "label", file);
    if (r.label.size() > kMaxLabelSize) {
        corrupt(file, "label too long");
    }
    r.id = get_hex(doc, "id", file, 0, kMaxIdSize);
    r.type = key_type_from(get_string(doc, "type", file), file);
    // An object (not a key) has no size; every key has one.
    const bool object = hsm::is_object(r.type);
    r.bits =
        static_cast<std::uint32_t>(get_uint(doc, "bits", file, object ? 0 : 1, object ? 0 : 65536));
    r.protection = protection_from(get_string(doc, "protection", file), file);
    r.public_der = get_hex(doc, "public", file, 0, kMaxBlob);
    r.wrapped_private = get_hex(doc, "wrapped_private", file, 1, kMaxBlob);
    r.creator = get_creator(doc, file);
    r.extractable = get_flag(doc, "extractable", file);
    r.imported = get_flag(doc, "imported", file);
    if (doc.contains("check_value")) {
        r.check_value = get_hex(doc, "check_value", file, 3, 3);
    }
    return r;
}

} // namespace preloadrun::sim
