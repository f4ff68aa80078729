#pragma once
// How many wrong passphrases one uid may try for one token before hsmsim
// stops checking them for a while. Counted per (uid, token): another user's
// wrong passphrases never lock anyone else out.
//
// After `free_tries` wrong passphrases in a row, a further try is refused at
// once, without checking it, until `first_delay` has passed since the last
// wrong one; each further wrong passphrase doubles the delay, up to
// `max_delay`. A right passphrase starts afresh. A wrong passphrase counts
// once: the same one tried again (or on several modules at once, as
// preloadrun does) is known to be wrong and is answered so at once, without
// counting. While `free_tries` are left, at most that many different
// passphrases are checked at the same time (one once they are used up), so
// that concurrent tries cannot slip past the count. Failures are forgotten
// `forget_after` the last one.
//
// Passphrases are known only by a keyed digest (token_unlocker.hpp), never
// stored. Thread-safe; time comes from the injected clock.

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/clock.hpp"
#include "preloadrun/common/secure_buffer.hpp"

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <sys/types.h>
#include <utility>
#include <vector>

namespace preloadrun::sim {

struct PassphrasePolicy {
    std::uint32_t free_tries = 5;
    std::chrono::milliseconds first_delay{1000};
    std::chrono::milliseconds max_delay{5 * 60 * 1000};
    std::chrono::milliseconds forget_after{24 * 60 * 60 * 1000};
    std::size_t max_entries = 65536; // (uid, token) pairs followed at most
    std::size_t max_remembered = 32; // wrong digests remembered per pair
};

using PassphraseDigest = std::array<std::uint8_t, 32>;

// The digest the limiter knows a passphrase by: HMAC-SHA256 under `key`, a
// secret drawn when the service starts and never stored.
PassphraseDigest passphrase_digest(const SecureBuffer& key, const SecureBuffer& passphrase);

// A refusal's wait for messages, in whole seconds rounded up: "1 s" rather
// than "0 s".
std::string seconds_text(std::chrono::milliseconds wait);

class PassphraseLimiter {
public:
    enum class Verdict {
        check,       // go on: check it, then call finished()
        known_wrong, // already found wrong since the last right one: say so, do not check
        refused,     // too many wrong passphrases: do not check; try again after retry_after
    };
    struct Admission {
        Verdict verdict = Verdict::check;
        std::chrono::milliseconds retry_after{0};
    };
    enum class Outcome {
        right,
        wrong,
        undecided // the check could not be made (damaged token file, ...)
    };

    explicit PassphraseLimiter(const Clock& clock, const PassphrasePolicy& policy = {})
        : clock_(clock), policy_(policy) {}
    PassphraseLimiter(const PassphraseLimiter&) = delete;
    PassphraseLimiter& operator=(const PassphraseLimiter&) = delete;

    // Before checking the passphrase with `digest` for `token`, from `uid`.
    Admission admit(uid_t uid, const Bytes& token, const PassphraseDigest& digest);
    // After a check that admit() allowed. For a wrong passphrase that now
    // locks the pair out: how long further tries are refused.
    std::optional<std::chrono::milliseconds>
    finished(uid_t uid, const Bytes& token, const PassphraseDigest& digest, Outcome outcome);

    // Wrong passphrases in a row counted for the pair.
    std::uint32_t failures(uid_t uid, const Bytes& token) const;
    std::size_t pairs() const;

private:
    struct Entry {
        std::uint32_t failures = 0;
        Clock::time_point last_failure{};
        std::vector<PassphraseDigest> wrong; // oldest first
        std::uint32_t in_flight = 0;
    };
    using Key = std::pair<uid_t, Bytes>;

    std::chrono::milliseconds delay(std::uint32_t failures) const;
    std::optional<std::chrono::milliseconds> refused_for(const Entry& entry,
                                                         Clock::time_point now) const;
    bool forgotten(const Entry& entry, Clock::time_point now) const;
    void make_room(Clock::time_point now);
    std::map<Key, Entry>::iterator entry_for(const Key& key, Clock::time_point now);

    const Clock& clock_;
    const PassphrasePolicy policy_;
    mutable std::mutex mutex_;
    std::map<Key, Entry> entries_;
};

} // namespace preloadrun::sim
