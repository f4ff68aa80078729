#pragma once
// Helpers shared by the hsmsim unit tests: fast worlds, digests, and
// signature checks done with OpenSSL directly (not through sim::Key).

#include "model/fleet.hpp"
#include "model/simulated_module.hpp"
#include "model/world.hpp"
#include "preloadrun/common/bytes.hpp"
#include "preloadrun/hsm/types.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

namespace simtest {

using preloadrun::Bytes;

inline constexpr std::uint32_t kFastKdf = 10; // KDF iterations in tests

std::unique_ptr<preloadrun::sim::World> make_world(const std::filesystem::path& dir,
                                                   const preloadrun::sim::WorldLimits& limits = {});
preloadrun::sim::WorldOptions world_options(const std::filesystem::path& dir,
                                            const preloadrun::sim::WorldLimits& limits = {});

// Module `number` of a fleet of simulated modules.
preloadrun::sim::SimulatedModule& simulated(preloadrun::sim::Fleet& fleet, std::uint32_t number);

Bytes digest(preloadrun::hsm::Hash hash, const Bytes& data);
// DigestInfo (PKCS#1 v1.5) for a SHA-256 digest.
Bytes sha256_digest_info(const Bytes& digest);

// Independent checks with the public key DER.
bool openssl_verify_pkcs1(const Bytes& spki, const Bytes& digest, const Bytes& sig);
bool openssl_verify_pss(const Bytes& spki, const Bytes& digest, const Bytes& sig, int salt_len);
bool openssl_verify_ecdsa_raw(const Bytes& spki, const Bytes& digest, const Bytes& raw_sig);
Bytes openssl_encrypt_oaep(const Bytes& spki, const Bytes& data, const Bytes& label);
// The raw RSA public operation (no padding) on a block of the modulus' size:
// ciphertexts with any encoding at all, well-formed or not.
Bytes openssl_rsa_raw(const Bytes& spki, const Bytes& block);

mode_t file_mode(const std::filesystem::path& path);

// Waits up to `timeout` for `condition`; true when it held.
bool eventually(const std::function<bool()>& condition,
                std::chrono::milliseconds timeout = std::chrono::milliseconds(3000));

} // namespace simtest
