#pragma once
// The admin commands of hsmsim, one function each. They talk to a running
// service through the client library and print to stdout; failures are
// thrown as preloadrun::Error and turned into an exit status by the CLI.

#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace preloadrun::sim {

struct Endpoints {
    hsm::Endpoint client;
    hsm::Endpoint admin;
};

struct GenerateOptions {
    std::string type; // rsa-2048, ec-p256, aes-256, ...
    std::string label;
    std::string id_hex;  // empty: no CKA_ID
    std::string protect; // module | softcard:NAME | cardset:NAME
    std::optional<std::string> passphrase_file;
    bool allow_duplicate = false; // else: refused when a key under the same protection has
                                  // the label, or the id
};

void create_token(const Endpoints& ep, hsm::TokenType type, const std::string& name,
                  const std::optional<std::string>& passphrase_file);
void list_tokens(const Endpoints& ep, hsm::TokenType type, bool json);
void generate_key(const Endpoints& ep, const GenerateOptions& options);
void list_keys(const Endpoints& ep, bool json);
// A token's key: loads the token (asking for its passphrase, or reading
// passphrase_file) on a usable module, deletes the key, unloads the token.
void delete_key(const Endpoints& ep, const std::string& ident,
                const std::optional<std::string>& passphrase_file);
// The same for a token: refused while it protects keys, unless with_keys.
void delete_token(const Endpoints& ep, hsm::TokenType type, const std::string& name, bool with_keys,
                  const std::optional<std::string>& passphrase_file);
void list_modules(const Endpoints& ep, bool json);
void control_module(const Endpoints& ep, std::uint32_t module, hsm::ModuleAction action);
void add_module(const Endpoints& ep);
void set_latency(const Endpoints& ep, std::uint32_t module, std::uint32_t latency_ms);
void fail_next(const Endpoints& ep, std::uint32_t module, std::uint32_t count);

} // namespace preloadrun::sim
