#include "cli/commands.hpp"

#include "cli/key_names.hpp"
#include "cli/output.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/passphrase.hpp"

#include <cstdio>
#include <iostream>
#include <optional>
#include <vector>

namespace preloadrun::sim {

namespace {

std::string token_kind(hsm::TokenType type) {
    return std::string(hsm::to_string(type));
}

SecureBuffer get_passphrase(const std::optional<std::string>& file, const std::string& what,
                            bool confirm) {
    if (file) {
        return read_passphrase_file(*file);
    }
    return prompt_passphrase("Passphrase for " + what + ": ", confirm);
}

hsm::TokenInfo find_token(hsm::Service& service, hsm::TokenType type, const std::string& name) {
    for (auto& token : service.tokens()) {
        if (token.type == type && token.name == name) {
            return token;
        }
    }
    throw Error(ErrorCode::not_found, "no " + token_kind(type) + " named '" + name +
                                          "' in this world (see: hsmsim " + token_kind(type) +
                                          " list)");
}

std::uint32_t first_usable_module(hsm::Service& service, const std::string& what) {
    for (const auto& module : service.modules()) {
        if (module.state == hsm::ModuleState::usable) {
            return module.number;
        }
    }
    throw Error(ErrorCode::module_not_usable, "no usable module to " + what + " on");
}

// A key's token by name (key lists carry only its type and hash), or by
// hash when the world no longer lists it.
std::string token_name(hsm::Service& service, const hsm::TokenInfo& token) {
    for (const auto& t : service.tokens()) {
        if (t.type == token.type && t.hash == token.hash) {
            return t.name;
        }
    }
    return to_hex(token.hash);
}

hsm::KeyInfo find_key(hsm::Service& service, const std::string& ident) {
    for (auto& key : service.keys()) {
        if (key.ident == ident) {
            return key;
        }
    }
    throw Error(ErrorCode::not_found,
                "no key with ident " + ident + " in this world (see: hsmsim key list)");
}

// Unloads what a command loaded, also when it fails half-way: objects belong
// to the uid, not to the connection, so nothing else would remove them.
class LoadedObjects {
public:
    LoadedObjects(hsm::Service& service, std::uint32_t module)
        : service_(service), module_(module) {}
    LoadedObjects(const LoadedObjects&) = delete;
    LoadedObjects& operator=(const LoadedObjects&) = delete;
    ~LoadedObjects() {
        for (auto it = handles_.rbegin(); it != handles_.rend(); ++it) {
            try {
                service_.unload(module_, *it);
            } catch (const Error&) {
                // Best effort: the module may have been cleared meanwhile.
            }
        }
    }
    void add(hsm::ObjectHandle handle) { handles_.push_back(handle); }
    // Unloaded already, by the service.
    void forget(hsm::ObjectHandle handle) { std::erase(handles_, handle); }

private:
    hsm::Service& service_;
    std::uint32_t module_;
    std::vector<hsm::ObjectHandle> handles_;
};

// The service closes a connection on which nothing has come for a while
// (hsmsim serve --idle-timeout): once a passphrase has been typed, however
// slowly, connect again if it has.
void reconnect_if_closed(std::optional<hsm::SimClient>& client, const hsm::Endpoint& endpoint) {
    if (!client->usable()) {
        client.reset();
        client.emplace(endpoint);
    }
}

// The persistent keys a token protects (none: module-protected).
std::vector<hsm::KeyInfo> keys_under(const std::vector<hsm::KeyInfo>& keys,
                                     const std::optional<hsm::TokenInfo>& token) {
    std::vector<hsm::KeyInfo> out;
    for (const auto& key : keys) {
        if (key.token.has_value() == token.has_value() &&
            (!token || (key.token->type == token->type && key.token->hash == token->hash))) {
            out.push_back(key);
        }
    }
    return out;
}

constexpr const char* kAllowDuplicateHint = "; add --allow-duplicate to make another all the same";

// As the service says it.
std::string key_kind(const std::optional<hsm::TokenInfo>& token) {
    return token ? "key protected by " + token_kind(token->type) + " '" + token->name + "'"
                 : "module-protected key";
}

// What the service checks again when the key is stored: said here before the
// passphrase is asked and the key made.
void refuse_duplicate(const std::vector<hsm::KeyInfo>& keys,
                      const std::optional<hsm::TokenInfo>& token, const hsm::KeySpec& spec) {
    for (const auto& key : keys_under(keys, token)) {
        std::string same;
        if (key.label == spec.label) {
            same = "label '" + spec.label + "'";
        } else if (!spec.id.empty() && key.id == spec.id) {
            same = "id " + to_hex(spec.id);
        } else {
            continue;
        }
        throw Error(ErrorCode::already_exists, "a " + key_kind(token) + " already has the " + same +
                                                   " (key " + key.ident + ")" +
                                                   kAllowDuplicateHint);
    }
}

std::string labels_of(const std::vector<hsm::KeyInfo>& keys) {
    std::string out;
    for (const auto& key : keys) {
        out += (out.empty() ? "'" : ", '") + key.label + "'";
    }
    return out;
}

void print_module_change(const hsm::ModuleInfo& m) {
    std::cout << "module " << m.number << ": " << hsm::to_string(m.state) << ", generation "
              << m.generation << "\n";
}

} // namespace

void create_token(const Endpoints& ep, hsm::TokenType type, const std::string& name,
                  const std::optional<std::string>& passphrase_file) {
    auto passphrase = get_passphrase(passphrase_file, "new " + token_kind(type) + " " + name, true);
    hsm::SimClient client(ep.client);
    auto token = client.create_token(type, name, passphrase);
    std::cout << "created " << token_kind(type) << " " << token.name << " (hash "
              << to_hex(token.hash) << ")\n";
}

void list_tokens(const Endpoints& ep, hsm::TokenType type, bool json) {
    hsm::SimClient client(ep.client);
    std::vector<hsm::TokenInfo> selected;
    for (auto& token : client.tokens()) {
        if (token.type == type) {
            selected.push_back(std::move(token));
        }
    }
    std::cout << (json ? tokens_json(selected) : tokens_table(selected));
}

void generate_key(const Endpoints& ep, const GenerateOptions& options) {
    auto spec = parse_key_type(options.type);
    spec.label = options.label;
    spec.id = options.id_hex.empty() ? Bytes{} : from_hex(options.id_hex);
    spec.persistent = true;
    spec.refuse_duplicate = !options.allow_duplicate;
    auto protection = parse_protection(options.protect);
    if (!protection.token && options.passphrase_file) {
        throw Error(ErrorCode::usage, "--passphrase-file goes with --protect softcard:NAME or "
                                      "cardset:NAME, not with module protection");
    }

    std::optional<hsm::SimClient> client(std::in_place, ep.client);
    std::optional<hsm::TokenInfo> token;
    if (protection.token) {
        token = find_token(*client, protection.token->type, protection.token->name);
    }
    if (spec.refuse_duplicate) {
        refuse_duplicate(client->keys(), token, spec);
    }
    auto module = first_usable_module(*client, "generate the key");
    SecureBuffer passphrase;
    if (token) {
        passphrase = get_passphrase(options.passphrase_file,
                                    token_kind(token->type) + " " + token->name, false);
        reconnect_if_closed(client, ep.client);
    }
    LoadedObjects loaded(*client, module);
    if (token) {
        spec.token_handle = client->load_token(module, token->hash, passphrase);
        loaded.add(spec.token_handle);
    }
    hsm::GeneratedKey generated;
    try {
        generated = client->generate_key(module, spec);
    } catch (const Error& e) {
        if (e.code() != ErrorCode::already_exists) {
            throw;
        }
        // Made meanwhile by someone else: the service checks too.
        throw Error(e.code(), e.what() + std::string(kAllowDuplicateHint));
    }
    loaded.add(generated.handle);
    std::cout << "generated " << options.type << " key '" << generated.key.label << "' (ident "
              << generated.key.ident << ") protected by " << options.protect << "\n";
}

void list_keys(const Endpoints& ep, bool json) {
    hsm::SimClient client(ep.client);
    auto tokens = client.tokens();
    auto keys = client.keys();
    std::cout << (json ? keys_json(keys, tokens) : keys_table(keys, tokens));
}

void delete_key(const Endpoints& ep, const std::string& ident,
                const std::optional<std::string>& passphrase_file) {
    std::optional<hsm::SimClient> client(std::in_place, ep.client);
    const auto key = find_key(*client, ident);
    const std::string what = "key '" + key.label + "' (ident " + key.ident + ")";
    if (!key.token) {
        if (passphrase_file) {
            throw Error(ErrorCode::usage, what + " is module-protected: it takes no passphrase "
                                                 "(drop --passphrase-file)");
        }
        client->destroy_key(ident, 0, 0);
        std::cout << "deleted " << what << "\n";
        return;
    }
    const auto& token = *key.token;
    const std::string token_text = token_kind(token.type) + " " + token_name(*client, token);
    auto module = first_usable_module(*client, "load " + token_text);
    auto passphrase = get_passphrase(passphrase_file, token_text, false);
    reconnect_if_closed(client, ep.client);
    LoadedObjects loaded(*client, module);
    const auto handle = client->load_token(module, token.hash, passphrase);
    loaded.add(handle);
    client->destroy_key(ident, module, handle);
    std::cout << "deleted " << what << " protected by " << token_text << "\n";
}

void delete_token(const Endpoints& ep, hsm::TokenType type, const std::string& name, bool with_keys,
                  const std::optional<std::string>& passphrase_file) {
    std::optional<hsm::SimClient> client(std::in_place, ep.client);
    const auto token = find_token(*client, type, name);
    const std::string what = token_kind(type) + " '" + name + "'";
    const auto keys = keys_under(client->keys(), token);
    auto refuse = [&](const std::vector<hsm::KeyInfo>& protected_keys) {
        return Error(ErrorCode::conflict,
                     what + " protects " + std::to_string(protected_keys.size()) + " key(s) (" +
                         labels_of(protected_keys) +
                         "): delete them first (hsmsim key delete IDENT), or add --with-keys to "
                         "delete them with it");
    };
    if (!keys.empty() && !with_keys) {
        throw refuse(keys);
    }
    auto module = first_usable_module(*client, "load " + what);
    auto passphrase = get_passphrase(passphrase_file, token_kind(type) + " " + name, false);
    reconnect_if_closed(client, ep.client);
    LoadedObjects loaded(*client, module);
    const auto handle = client->load_token(module, token.hash, passphrase);
    loaded.add(handle);
    try {
        client->destroy_token(token.hash, module, handle, with_keys);
        loaded.forget(handle); // it went with the token
    } catch (const Error& e) {
        if (e.code() != ErrorCode::conflict) {
            throw;
        }
        // A key made meanwhile: the service checks too.
        throw refuse(keys_under(client->keys(), token));
    }
    std::cout << "deleted " << what << " (hash " << to_hex(token.hash) << ")";
    if (!keys.empty()) {
        std::cout << " and the " << keys.size() << " key(s) it protected: " << labels_of(keys);
    }
    std::cout << "\n";
}

void list_modules(const Endpoints& ep, bool json) {
    hsm::SimClient client(ep.client);
    auto modules = client.modules();
    std::cout << (json ? modules_json(modules) : modules_table(modules));
}

void control_module(const Endpoints& ep, std::uint32_t module, hsm::ModuleAction action) {
    hsm::SimAdmin admin(ep.admin);
    print_module_change(admin.control(module, action));
}

void add_module(const Endpoints& ep) {
    hsm::SimAdmin admin(ep.admin);
    std::cout << admin.add_module().number << "\n";
}

void set_latency(const Endpoints& ep, std::uint32_t module, std::uint32_t latency_ms) {
    hsm::SimAdmin admin(ep.admin);
    auto m = admin.set_latency(module, latency_ms);
    std::cout << "module " << m.number << ": latency " << m.latency_ms << " ms\n";
}

void fail_next(const Endpoints& ep, std::uint32_t module, std::uint32_t count) {
    hsm::SimAdmin admin(ep.admin);
    auto m = admin.fail_next(module, count);
    std::cout << "module " << m.number << ": the next " << m.fail_next
              << " operations will fail transiently\n";
}

} // namespace preloadrun::sim
