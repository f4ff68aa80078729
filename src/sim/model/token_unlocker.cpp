#include "model/token_unlocker.hpp"

#include "model/keywrap.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"

#include <string>

namespace preloadrun::sim {

namespace {

constexpr std::size_t kDigestKeySize = 32;

std::string token_text(const CardRecord& card) {
    return std::string(token_type_text(card.type)) + " '" + card.name + "'";
}

// Error(internal) for what is not an Error.
Error as_error(const std::exception_ptr& error) {
    try {
        std::rethrow_exception(error);
    } catch (const Error& e) {
        return e;
    } catch (const std::exception& e) {
        return Error(ErrorCode::internal, e.what());
    } catch (...) {
        return Error(ErrorCode::internal, "unknown failure while checking a passphrase");
    }
}

PassphraseLimiter::Outcome outcome_of(const std::exception_ptr& error) {
    if (!error) {
        return PassphraseLimiter::Outcome::right;
    }
    try {
        std::rethrow_exception(error);
    } catch (const Error& e) {
        if (e.code() == ErrorCode::wrong_passphrase) {
            return PassphraseLimiter::Outcome::wrong;
        }
    } catch (...) {
    }
    return PassphraseLimiter::Outcome::undecided;
}

} // namespace

TokenUnlocker::TokenUnlocker(const World& world, const Clock& clock, const PassphrasePolicy& policy)
    : world_(world), limiter_(clock, policy), digest_key_(random_secret(kDigestKeySize)) {}

PassphraseDigest TokenUnlocker::digest_of(const SecureBuffer& passphrase) const {
    return passphrase_digest(digest_key_, passphrase);
}

SecureBuffer TokenUnlocker::unlock(const CardRecord& card, const SecureBuffer& passphrase,
                                   uid_t uid) {
    const auto digest = digest_of(passphrase);
    const FlightKey key{uid, card.hash, digest};
    std::unique_lock lock(mutex_);
    if (auto it = flights_.find(key); it != flights_.end()) {
        // The same try is being checked: share its answer.
        auto flight = it->second;
        landed_.wait(lock, [&] { return flight->done; });
        if (const auto& failure = flight->failure) {
            throw Error(failure->code, failure->message, failure->origin);
        }
        return *flight->key;
    }
    const auto admission = limiter_.admit(uid, card.hash, digest);
    switch (admission.verdict) {
    case PassphraseLimiter::Verdict::refused:
        throw Error(ErrorCode::too_many_attempts,
                    "too many wrong passphrases for " + token_text(card) +
                        " from this user; try again in " + seconds_text(admission.retry_after));
    case PassphraseLimiter::Verdict::known_wrong:
        throw Error(ErrorCode::wrong_passphrase, "wrong passphrase for " + token_text(card));
    case PassphraseLimiter::Verdict::check:
        break;
    }
    flights_.emplace(key, std::make_shared<Flight>());
    lock.unlock();
    return check(card, passphrase, key);
}

SecureBuffer TokenUnlocker::check(const CardRecord& card, const SecureBuffer& passphrase,
                                  const FlightKey& key) {
    const auto& [uid, hash, digest] = key;
    std::optional<SecureBuffer> token_key;
    std::exception_ptr error;
    try {
        token_key = world_.unlock_token(card, passphrase);
    } catch (...) {
        error = std::current_exception();
    }
    try {
        // Recorded before the flight lands: a try arriving after it finds
        // the outcome in the limiter.
        if (auto locked = limiter_.finished(uid, hash, digest, outcome_of(error))) {
            log::get("sim.engine")
                ->warn("uid {}: {} wrong passphrases in a row for {}; its tries are refused for {}",
                       uid, limiter_.failures(uid, hash), token_text(card), seconds_text(*locked));
        }
    } catch (...) {
        if (!error) {
            error = std::current_exception();
        }
    }
    land(key, token_key, error);
    if (error) {
        std::rethrow_exception(error);
    }
    return std::move(*token_key);
}

void TokenUnlocker::land(const FlightKey& key, const std::optional<SecureBuffer>& token_key,
                         std::exception_ptr error) noexcept {
    std::lock_guard lock(mutex_);
    auto it = flights_.find(key);
    auto& flight = *it->second;
    flight.done = true;
    try {
        if (error) {
            const auto e = as_error(error);
            flight.failure = Failure{e.code(), e.origin(), e.what()};
        } else if (token_key) {
            flight.key = *token_key;
        }
    } catch (...) {
        // No memory for the answer (a key copy that throws leaves none). The
        // text fits in the string itself (no allocation).
        flight.failure.emplace(Failure{ErrorCode::internal, Origin::local, "out of memory"});
    }
    flights_.erase(it); // those waiting for it hold it
    landed_.notify_all();
}

} // namespace preloadrun::sim
