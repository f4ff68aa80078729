#include "cli/output.hpp"

#include "cli/key_names.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>
#include <sstream>

namespace preloadrun::sim {

namespace {

using Row = std::vector<std::string>;

std::string table(const Row& header, const std::vector<Row>& rows) {
    std::vector<std::size_t> width(header.size());
    for (std::size_t i = 0; i < header.size(); ++i) {
        width[i] = header[i].size();
        for (const auto& row : rows) {
            width[i] = std::max(width[i], row[i].size());
        }
    }
    std::ostringstream out;
    auto line = [&](const Row& row) {
        std::string text;
        for (std::size_t i = 0; i < row.size(); ++i) {
            text += row[i];
            if (i + 1 < row.size()) {
                text += std::string(width[i] - row[i].size() + 2, ' ');
            }
        }
        out << text << "\n";
    };
    line(header);
    for (const auto& row : rows) {
        line(row);
    }
    return out.str();
}

std::string protection_name(const hsm::KeyInfo& key, const std::vector<hsm::TokenInfo>& tokens) {
    if (!key.token) {
        return "module";
    }
    std::string name = key.token->name;
    for (const auto& token : tokens) {
        if (token.hash == key.token->hash) {
            name = token.name;
        }
    }
    if (name.empty()) {
        name = to_hex(key.token->hash);
    }
    return std::string(hsm::to_string(key.token->type)) + ":" + name;
}

} // namespace

std::string modules_table(const std::vector<hsm::ModuleInfo>& modules) {
    std::vector<Row> rows;
    for (const auto& m : modules) {
        rows.push_back({std::to_string(m.number), m.esn,
                        m.drained ? std::string("drained") : std::string(hsm::to_string(m.state)),
                        std::to_string(m.generation), std::to_string(m.latency_ms),
                        std::to_string(m.ops), std::to_string(m.ops_failed),
                        std::to_string(m.objects)});
    }
    return table({"MODULE", "ESN", "STATE", "GENERATION", "LATENCY_MS", "OPS", "FAILED", "OBJECTS"},
                 rows);
}

std::string modules_json(const std::vector<hsm::ModuleInfo>& modules) {
    auto out = nlohmann::json::array();
    for (const auto& m : modules) {
        out.push_back({{"number", m.number},
                       {"esn", m.esn},
                       {"state", hsm::to_string(m.state)},
                       {"generation", m.generation},
                       {"latency_ms", m.latency_ms},
                       {"ops", m.ops},
                       {"ops_failed", m.ops_failed},
                       {"objects", m.objects},
                       {"fail_next", m.fail_next},
                       {"drained", m.drained}});
    }
    return out.dump(2) + "\n";
}

std::string tokens_table(const std::vector<hsm::TokenInfo>& tokens) {
    std::vector<Row> rows;
    for (const auto& t : tokens) {
        rows.push_back({t.name, to_hex(t.hash)});
    }
    return table({"NAME", "HASH"}, rows);
}

std::string tokens_json(const std::vector<hsm::TokenInfo>& tokens) {
    auto out = nlohmann::json::array();
    for (const auto& t : tokens) {
        out.push_back(
            {{"type", hsm::to_string(t.type)}, {"name", t.name}, {"hash", to_hex(t.hash)}});
    }
    return out.dump(2) + "\n";
}

std::string keys_table(const std::vector<hsm::KeyInfo>& keys,
                       const std::vector<hsm::TokenInfo>& tokens) {
    std::vector<Row> rows;
    for (const auto& k : keys) {
        rows.push_back({k.label, to_hex(k.id), key_type_name(k.type, k.bits),
                        protection_name(k, tokens), k.ident});
    }
    return table({"LABEL", "ID", "TYPE", "PROTECTION", "IDENT"}, rows);
}

std::string keys_json(const std::vector<hsm::KeyInfo>& keys,
                      const std::vector<hsm::TokenInfo>& tokens) {
    auto out = nlohmann::json::array();
    for (const auto& k : keys) {
        out.push_back({{"ident", k.ident},
                       {"label", k.label},
                       {"id", to_hex(k.id)},
                       {"type", key_type_name(k.type, k.bits)},
                       {"bits", k.bits},
                       {"protection", protection_name(k, tokens)},
                       {"token_hash", k.token ? to_hex(k.token->hash) : std::string()},
                       {"extractable", k.extractable},
                       {"imported", k.imported},
                       // An object's content is not a public key.
                       {"public_key_pem",
                        hsm::is_object(k.type) ? std::string() : public_key_pem(k.public_der)}});
    }
    return out.dump(2) + "\n";
}

std::string public_key_pem(const Bytes& der) {
    if (der.empty()) {
        return {};
    }
    std::string out = "-----BEGIN PUBLIC KEY-----\n";
    for (std::size_t pos = 0; pos < der.size(); pos += 48) {
        auto n = std::min<std::size_t>(48, der.size() - pos);
        std::string line(4 * ((n + 2) / 3) + 1, '\0');
        int len = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(line.data()), der.data() + pos,
                                  static_cast<int>(n));
        line.resize(static_cast<std::size_t>(len));
        out += line + "\n";
    }
    out += "-----END PUBLIC KEY-----\n";
    return out;
}

} // namespace preloadrun::sim
