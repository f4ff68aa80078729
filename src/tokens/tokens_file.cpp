#include "preloadrun/tokens/tokens_file.hpp"

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/error.hpp"

#include <array>
#include <limits>
#include <nlohmann/json.hpp>
#include <utility>

namespace preloadrun::tokens {

namespace {

using nlohmann::json;

constexpr std::string_view kFormat = "preloadrun-tokens";

// The file's spelling of each value: the one table both directions read.
template <class Enum, std::size_t N> using Names = std::array<std::pair<Enum, std::string_view>, N>;

constexpr Names<ModuleState, 4> kModuleStates{{{ModuleState::usable, "usable"},
                                               {ModuleState::initialising, "initialising"},
                                               {ModuleState::failed, "failed"},
                                               {ModuleState::removed, "removed"}}};
constexpr Names<TokenType, 2> kTokenTypes{
    {{TokenType::softcard, "softcard"}, {TokenType::cardset, "cardset"}}};

template <class Enum, std::size_t N>
std::string_view name_of(const Names<Enum, N>& names, Enum value) noexcept {
    for (const auto& [candidate, name] : names) {
        if (candidate == value) {
            return name;
        }
    }
    return "?";
}

template <class Enum, std::size_t N>
std::optional<Enum> value_of(const Names<Enum, N>& names, std::string_view text) noexcept {
    for (const auto& [value, name] : names) {
        if (name == text) {
            return value;
        }
    }
    return std::nullopt;
}

[[noreturn]] void corrupt(const std::string& what) {
    throw Error(ErrorCode::corrupt, "tokens file: " + what);
}

const json& field(const json& object, const char* name, const std::string& where) {
    auto it = object.find(name);
    if (it == object.end()) {
        corrupt(where + ": missing \"" + name + "\"");
    }
    return *it;
}

std::string get_string(const json& object, const char* name, const std::string& where,
                       std::size_t max_size = 256) {
    const auto& value = field(object, name, where);
    if (!value.is_string()) {
        corrupt(where + ": \"" + name + "\" is not a string");
    }
    auto text = value.get<std::string>();
    if (text.size() > max_size) {
        corrupt(where + ": \"" + name + "\" is too long");
    }
    return text;
}

template <class T>
T get_uint(const json& object, const char* name, const std::string& where,
           T max = std::numeric_limits<T>::max()) {
    const auto& value = field(object, name, where);
    if (!value.is_number_unsigned() &&
        !(value.is_number_integer() && value.get<std::int64_t>() >= 0)) {
        corrupt(where + ": \"" + name + "\" is not a non-negative integer");
    }
    auto number = value.get<std::uint64_t>();
    if (number > static_cast<std::uint64_t>(max)) {
        corrupt(where + ": \"" + name + "\" is out of range");
    }
    return static_cast<T>(number);
}

std::int64_t get_int(const json& object, const char* name, const std::string& where) {
    const auto& value = field(object, name, where);
    if (!value.is_number_integer()) {
        corrupt(where + ": \"" + name + "\" is not an integer");
    }
    return value.get<std::int64_t>();
}

bool get_bool(const json& object, const char* name, const std::string& where) {
    const auto& value = field(object, name, where);
    if (!value.is_boolean()) {
        corrupt(where + ": \"" + name + "\" is not true or false");
    }
    return value.get<bool>();
}

const json& get_array(const json& object, const char* name, const std::string& where,
                      std::size_t max_size) {
    const auto& value = field(object, name, where);
    if (!value.is_array()) {
        corrupt(where + ": \"" + name + "\" is not an array");
    }
    if (value.size() > max_size) {
        corrupt(where + ": \"" + name + "\" has more than " + std::to_string(max_size) +
                " entries");
    }
    return value;
}

void require_object(const json& value, const std::string& where) {
    if (!value.is_object()) {
        corrupt(where + " is not an object");
    }
}

std::string get_hex(const json& object, const char* name, const std::string& where,
                    std::size_t bytes) {
    auto text = get_string(object, name, where);
    if (!is_hex(text) || (bytes != 0 && text.size() != 2 * bytes)) {
        corrupt(where + ": \"" + name + "\" is not " +
                (bytes != 0 ? std::to_string(2 * bytes) + " hex digits" : "hex"));
    }
    return text;
}

template <class Enum, std::size_t N>
Enum get_one_of(const json& object, const char* name, const std::string& where,
                const Names<Enum, N>& allowed) {
    auto text = get_string(object, name, where);
    if (auto value = value_of(allowed, text)) {
        return *value;
    }
    corrupt(where + ": \"" + name + "\" has an unknown value '" + text + "'");
}

Owner decode_owner(const json& value) {
    const std::string where = "owner";
    require_object(value, where);
    Owner owner;
    owner.process.pid = get_uint<pid_t>(value, "pid", where, std::numeric_limits<pid_t>::max());
    owner.process.start_time = get_uint<std::uint64_t>(value, "start_time", where);
    owner.process.boot_id = get_string(value, "boot_id", where, 64);
    owner.process.hostname = get_string(value, "hostname", where, 255);
    owner.instance = get_hex(value, "instance", where, 16);
    if (owner.process.pid == 0) {
        corrupt("owner: \"pid\" is 0");
    }
    return owner;
}

Module decode_module(const json& value, std::size_t index) {
    auto where = "modules[" + std::to_string(index) + "]";
    require_object(value, where);
    Module m;
    m.number = get_uint<std::uint32_t>(value, "number", where);
    m.esn = get_string(value, "esn", where, 64);
    m.state = get_one_of(value, "state", where, kModuleStates);
    m.generation = get_uint<std::uint64_t>(value, "generation", where);
    m.reloads = get_uint<std::uint64_t>(value, "reloads", where);
    m.last_reload_ms = get_int(value, "last_reload_ms", where);
    m.given_up = get_bool(value, "given_up", where);
    if (m.number == 0) {
        corrupt(where + ": \"number\" is 0");
    }
    return m;
}

Token decode_token(const json& value, std::size_t index) {
    auto where = "tokens[" + std::to_string(index) + "]";
    require_object(value, where);
    Token t;
    t.type = get_one_of(value, "type", where, kTokenTypes);
    t.name = get_string(value, "name", where, 64);
    t.hash = get_hex(value, "hash", where, 20);
    const auto& loaded = get_array(value, "loaded", where, kMaxModules);
    for (std::size_t i = 0; i < loaded.size(); ++i) {
        auto lw = where + ".loaded[" + std::to_string(i) + "]";
        require_object(loaded[i], lw);
        Loaded l;
        l.module = get_uint<std::uint32_t>(loaded[i], "module", lw);
        l.esn = get_string(loaded[i], "esn", lw, 64);
        l.module_generation = get_uint<std::uint64_t>(loaded[i], "module_generation", lw);
        l.handle = get_uint<std::uint64_t>(loaded[i], "handle", lw);
        if (l.module == 0 || l.handle == 0) {
            corrupt(lw + ": module and handle must not be 0");
        }
        t.loaded.push_back(std::move(l));
    }
    return t;
}

} // namespace

std::string_view to_string(ModuleState state) noexcept {
    return name_of(kModuleStates, state);
}

std::string_view to_string(TokenType type) noexcept {
    return name_of(kTokenTypes, type);
}

std::optional<ModuleState> module_state_named(std::string_view name) noexcept {
    return value_of(kModuleStates, name);
}

std::optional<TokenType> token_type_named(std::string_view name) noexcept {
    return value_of(kTokenTypes, name);
}

std::string encode(const TokensFile& file) {
    json modules = json::array();
    for (const auto& m : file.modules) {
        modules.push_back({{"number", m.number},
                           {"esn", m.esn},
                           {"state", to_string(m.state)},
                           {"generation", m.generation},
                           {"reloads", m.reloads},
                           {"last_reload_ms", m.last_reload_ms},
                           {"given_up", m.given_up}});
    }
    json tokens = json::array();
    for (const auto& t : file.tokens) {
        json loaded = json::array();
        for (const auto& l : t.loaded) {
            loaded.push_back({{"module", l.module},
                              {"esn", l.esn},
                              {"module_generation", l.module_generation},
                              {"handle", l.handle}});
        }
        tokens.push_back(
            {{"type", to_string(t.type)}, {"name", t.name}, {"hash", t.hash}, {"loaded", loaded}});
    }
    json out = {
        {"format", kFormat},
        {"version", file.version},
        {"generation", file.generation},
        {"owner",
         {{"pid", file.owner.process.pid},
          {"start_time", file.owner.process.start_time},
          {"boot_id", file.owner.process.boot_id},
          {"hostname", file.owner.process.hostname},
          {"instance", file.owner.instance}}},
        {"world", file.world},
        {"service_instance", file.service_instance},
        {"high_availability", file.high_availability},
        {"modules", modules},
        {"tokens", tokens},
    };
    return out.dump(2) + "\n";
}

TokensFile decode(std::string_view text) {
    if (text.size() > kMaxFileSize) {
        corrupt("larger than " + std::to_string(kMaxFileSize) + " bytes");
    }
    json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
    if (root.is_discarded()) {
        corrupt("not valid JSON");
    }
    require_object(root, "the document");
    if (get_string(root, "format", "the document") != kFormat) {
        corrupt("not a preloadrun tokens file (\"format\" is not \"preloadrun-tokens\")");
    }
    TokensFile file;
    file.version = get_uint<std::uint32_t>(root, "version", "the document");
    if (file.version != kFormatVersion) {
        corrupt("format version " + std::to_string(file.version) + " is not supported (this is " +
                std::to_string(kFormatVersion) + ")");
    }
    file.generation = get_uint<std::uint64_t>(root, "generation", "the document");
    file.owner = decode_owner(field(root, "owner", "the document"));
    file.world = get_hex(root, "world", "the document", 0);
    file.service_instance = get_hex(root, "service_instance", "the document", 16);
    file.high_availability = get_bool(root, "high_availability", "the document");
    const auto& modules = get_array(root, "modules", "the document", kMaxModules);
    for (std::size_t i = 0; i < modules.size(); ++i) {
        file.modules.push_back(decode_module(modules[i], i));
    }
    const auto& tokens = get_array(root, "tokens", "the document", kMaxTokens);
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        file.tokens.push_back(decode_token(tokens[i], i));
    }
    return file;
}

} // namespace preloadrun::tokens
