#pragma once
// Checks a token's passphrase (the KDF and the unwrap of the token key) for
// a uid, outside any module: the check is pure computation on the token's
// file, and a module is only taken to add the unlocked token to it.
//
// Each try goes through a PassphraseLimiter (passphrase_limiter.hpp), keyed
// by (uid, token) and a digest of the passphrase under a key drawn at random
// when the service starts and never stored: the digest identifies a repeated
// passphrase within this process and is of no use outside it. Tries of the
// same passphrase by the same uid for the same token at the same time (one
// per module, as preloadrun loads) share one check. Thread-safe.
//
// A failed check's error reaches each waiter as an exception object of its
// own (made from its code, origin and text), never as one object rethrown
// in several threads at once.

#include "model/passphrase_limiter.hpp"
#include "model/world.hpp"
#include "preloadrun/common/clock.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_buffer.hpp"

#include <condition_variable>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <sys/types.h>
#include <tuple>

namespace preloadrun::sim {

class TokenUnlocker {
public:
    TokenUnlocker(const World& world, const Clock& clock, const PassphrasePolicy& policy = {});
    TokenUnlocker(const TokenUnlocker&) = delete;
    TokenUnlocker& operator=(const TokenUnlocker&) = delete;

    // The token key of `card`, once `passphrase` is checked. Throws
    // Error(wrong_passphrase), Error(too_many_attempts) saying when to try
    // again (no check made), or what World::unlock_token throws.
    SecureBuffer unlock(const CardRecord& card, const SecureBuffer& passphrase, uid_t uid);

    const PassphraseLimiter& limiter() const noexcept { return limiter_; }

private:
    // What a failed check threw, as plain values.
    struct Failure {
        ErrorCode code;
        Origin origin;
        std::string message;
    };
    struct Flight {
        bool done = false;
        std::optional<SecureBuffer> key;
        std::optional<Failure> failure;
    };
    using FlightKey = std::tuple<uid_t, Bytes, PassphraseDigest>;

    PassphraseDigest digest_of(const SecureBuffer& passphrase) const;
    // Checks the passphrase of the flight `key` (registered by unlock()),
    // records the outcome and lands the flight for those waiting on it.
    SecureBuffer check(const CardRecord& card, const SecureBuffer& passphrase,
                       const FlightKey& key);
    void land(const FlightKey& key, const std::optional<SecureBuffer>& token_key,
              std::exception_ptr error) noexcept;

    const World& world_;
    PassphraseLimiter limiter_;
    const SecureBuffer digest_key_;
    std::mutex mutex_;
    std::condition_variable landed_;
    std::map<FlightKey, std::shared_ptr<Flight>> flights_;
};

} // namespace preloadrun::sim
