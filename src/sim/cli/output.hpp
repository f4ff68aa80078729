#pragma once
// What hsmsim's list commands print: aligned tables for people, JSON for
// programs. Each returns the whole text, newline-terminated.

#include "preloadrun/hsm/types.hpp"

#include <string>
#include <vector>

namespace preloadrun::sim {

std::string modules_table(const std::vector<hsm::ModuleInfo>& modules);
std::string modules_json(const std::vector<hsm::ModuleInfo>& modules);
std::string tokens_table(const std::vector<hsm::TokenInfo>& tokens);
std::string tokens_json(const std::vector<hsm::TokenInfo>& tokens);
// `tokens` names the tokens that protect the keys.
std::string keys_table(const std::vector<hsm::KeyInfo>& keys,
                       const std::vector<hsm::TokenInfo>& tokens);
std::string keys_json(const std::vector<hsm::KeyInfo>& keys,
                      const std::vector<hsm::TokenInfo>& tokens);

// SubjectPublicKeyInfo DER -> "-----BEGIN PUBLIC KEY-----..." ("" for empty).
std::string public_key_pem(const Bytes& der);

} // namespace preloadrun::sim
