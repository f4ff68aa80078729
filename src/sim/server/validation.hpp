#pragma once
// Checks and conversions of request fields. Every violation throws
// Error(usage) (ERROR_BAD_REQUEST on the wire) with a message that names the
// field and the allowed range.

#include "model/world_format.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"
#include "wire.pb.h"

#include <cstdint>
#include <string>

namespace preloadrun::sim::validate {

inline constexpr std::uint32_t kMaxRandom = 65536;
inline constexpr std::size_t kMaxLabel = kMaxLabelSize; // what a key file may hold
inline constexpr std::size_t kMaxId = kMaxIdSize;
// Key material to import (PKCS#8 of an RSA-4096 key is about 2,400 bytes),
// or the content of an object (model/crypto.hpp).
inline constexpr std::size_t kMaxKeyValue = 32 * 1024;
inline constexpr std::size_t kMaxPassphrase = 4096;

// 1..module_count.
std::uint32_t module_number(std::uint32_t number, std::uint32_t module_count);
hsm::TokenType token_type(wire::TokenType type);
hsm::KeyType key_type(wire::KeyType type);
// 1..64 characters of [A-Za-z0-9._-].
const std::string& token_name(const std::string& name);
// Exactly kTokenHashSize bytes.
Bytes token_hash(const std::string& hash);
// A persistent key's ident (40 hex digits).
const std::string& ident(const std::string& ident);
// The cursors of paged listings: "" or a key ident; "" or the hex of a
// token hash.
const std::string& key_cursor(const std::string& after);
const std::string& token_cursor(const std::string& after);
// At most kMaxPassphrase bytes; non-empty when `required`.
SecureBuffer passphrase(const std::string& passphrase, bool required);
hsm::KeySpec key_spec(const wire::GenerateKey& request);
// AES-GCM: only the IV and tag sizes of preloadrun/hsm/mechanism_params.hpp.
hsm::Mechanism mechanism(const wire::Mechanism& mech);
// A public key a client brings: 1 byte to kMaxKeyValue (the module decodes it).
Bytes public_key(const std::string& field);
std::uint32_t random_length(std::uint32_t length);

} // namespace preloadrun::sim::validate
