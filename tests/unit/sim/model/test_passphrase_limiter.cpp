#include "model/passphrase_limiter.hpp"
#include "support/fake_clock.hpp"

#include <doctest/doctest.h>

using namespace preloadrun;
using namespace preloadrun::sim;
using namespace std::chrono_literals;
using Verdict = PassphraseLimiter::Verdict;
using Outcome = PassphraseLimiter::Outcome;

namespace {

constexpr uid_t kVictim = 2000;
constexpr uid_t kAttacker = 2001;

using testsupport::FakeClock;

const Bytes kCard(20, 7);
const Bytes kOtherCard(20, 8);

PassphraseDigest digest(std::uint8_t n) {
    PassphraseDigest d{};
    d.fill(n);
    return d;
}

// One whole try: admitted, checked, found `outcome`. The verdict.
Verdict attempt(PassphraseLimiter& limiter, uid_t uid, std::uint8_t passphrase,
                Outcome outcome = Outcome::wrong, const Bytes& card = kCard) {
    auto admission = limiter.admit(uid, card, digest(passphrase));
    if (admission.verdict == Verdict::check) {
        limiter.finished(uid, card, digest(passphrase), outcome);
    }
    return admission.verdict;
}

} // namespace

TEST_CASE("sim::PassphraseLimiter refuses after 5 wrong passphrases, for a doubling delay") {
    FakeClock clock;
    PassphraseLimiter limiter(clock);
    for (std::uint8_t i = 1; i <= 4; ++i) {
        CHECK(attempt(limiter, kAttacker, i) == Verdict::check);
    }
    CHECK(limiter.admit(kAttacker, kCard, digest(5)).verdict == Verdict::check);
    CHECK(limiter.finished(kAttacker, kCard, digest(5), Outcome::wrong) == 1000ms);
    CHECK(limiter.failures(kAttacker, kCard) == 5);

    auto refused = limiter.admit(kAttacker, kCard, digest(6));
    CHECK(refused.verdict == Verdict::refused);
    CHECK(refused.retry_after == 1000ms);
    clock.advance(400ms);
    CHECK(limiter.admit(kAttacker, kCard, digest(6)).retry_after == 600ms);
    // Even the right passphrase is not checked while refused.
    CHECK(attempt(limiter, kAttacker, 99, Outcome::right) == Verdict::refused);

    clock.advance(600ms);
    CHECK(limiter.admit(kAttacker, kCard, digest(6)).verdict == Verdict::check);
    CHECK(limiter.finished(kAttacker, kCard, digest(6), Outcome::wrong) == 2000ms);
    clock.advance(1999ms);
    CHECK(attempt(limiter, kAttacker, 7) == Verdict::refused);
    clock.advance(1ms);
    CHECK(attempt(limiter, kAttacker, 7) == Verdict::check);
    CHECK(limiter.admit(kAttacker, kCard, digest(8)).retry_after == 4000ms);

    SUBCASE("the delay stops doubling at 5 minutes") {
        for (std::uint8_t i = 8; i < 30; ++i) {
            clock.advance(5min);
            REQUIRE(limiter.admit(kAttacker, kCard, digest(i)).verdict == Verdict::check);
            limiter.finished(kAttacker, kCard, digest(i), Outcome::wrong);
        }
        CHECK(limiter.admit(kAttacker, kCard, digest(30)).retry_after == 5min);
    }
    SUBCASE("a right passphrase starts afresh") {
        clock.advance(4s);
        CHECK(attempt(limiter, kAttacker, 99, Outcome::right) == Verdict::check);
        CHECK(limiter.failures(kAttacker, kCard) == 0);
        CHECK(limiter.pairs() == 0);
        for (std::uint8_t i = 10; i < 14; ++i) {
            CHECK(attempt(limiter, kAttacker, i) == Verdict::check);
        }
    }
    SUBCASE("failures are forgotten a day after the last one") {
        clock.advance(24h);
        CHECK(limiter.admit(kAttacker, kCard, digest(50)).verdict == Verdict::check);
        CHECK(limiter.failures(kAttacker, kCard) == 0);
    }
}

TEST_CASE("sim::PassphraseLimiter counts per uid and per token") {
    FakeClock clock;
    PassphraseLimiter limiter(clock);
    for (std::uint8_t i = 1; i <= 5; ++i) {
        attempt(limiter, kAttacker, i);
    }
    REQUIRE(attempt(limiter, kAttacker, 6) == Verdict::refused);
    // The victim, same token: checked at once, and its right passphrase works.
    CHECK(attempt(limiter, kVictim, 1) == Verdict::check);
    CHECK(attempt(limiter, kVictim, 99, Outcome::right) == Verdict::check);
    CHECK(limiter.failures(kVictim, kCard) == 0);
    // The attacker, another token: counted apart.
    CHECK(attempt(limiter, kAttacker, 1, Outcome::wrong, kOtherCard) == Verdict::check);
    CHECK(limiter.failures(kAttacker, kOtherCard) == 1);
}

TEST_CASE("sim::PassphraseLimiter a wrong passphrase counts once") {
    FakeClock clock;
    PassphraseLimiter limiter(clock);
    SUBCASE("tried again: known wrong at once, not counted, not checked") {
        CHECK(attempt(limiter, kVictim, 1) == Verdict::check);
        for (int i = 0; i < 10; ++i) {
            CHECK(attempt(limiter, kVictim, 1) == Verdict::known_wrong);
        }
        CHECK(limiter.failures(kVictim, kCard) == 1);
    }
    SUBCASE("checked on several modules at once (preloadrun's parallel load)") {
        for (int module = 0; module < 4; ++module) {
            REQUIRE(limiter.admit(kVictim, kCard, digest(1)).verdict == Verdict::check);
        }
        for (int module = 0; module < 4; ++module) {
            CHECK_FALSE(limiter.finished(kVictim, kCard, digest(1), Outcome::wrong));
        }
        CHECK(limiter.failures(kVictim, kCard) == 1);
        CHECK(limiter.pairs() == 1);
    }
}

TEST_CASE("sim::PassphraseLimiter concurrent tries cannot slip past the count") {
    FakeClock clock;
    PassphraseLimiter limiter(clock);
    attempt(limiter, kAttacker, 1);
    attempt(limiter, kAttacker, 2);
    // 3 tries left: 3 different passphrases may be checked at once, not a 4th.
    for (std::uint8_t i = 10; i < 13; ++i) {
        REQUIRE(limiter.admit(kAttacker, kCard, digest(i)).verdict == Verdict::check);
    }
    CHECK(limiter.admit(kAttacker, kCard, digest(13)).verdict == Verdict::refused);
    for (std::uint8_t i = 10; i < 13; ++i) {
        limiter.finished(kAttacker, kCard, digest(i), Outcome::wrong);
    }
    CHECK(limiter.failures(kAttacker, kCard) == 5);
    // Once the delay has passed: one at a time.
    clock.advance(1s);
    CHECK(limiter.admit(kAttacker, kCard, digest(20)).verdict == Verdict::check);
    CHECK(limiter.admit(kAttacker, kCard, digest(21)).verdict == Verdict::refused);
}

TEST_CASE("sim::PassphraseLimiter an undecided check changes nothing") {
    FakeClock clock;
    PassphraseLimiter limiter(clock);
    REQUIRE(limiter.admit(kVictim, kCard, digest(1)).verdict == Verdict::check);
    CHECK_FALSE(limiter.finished(kVictim, kCard, digest(1), Outcome::undecided));
    CHECK(limiter.failures(kVictim, kCard) == 0);
    CHECK(limiter.pairs() == 0);
    CHECK(attempt(limiter, kVictim, 1) == Verdict::check); // not taken as known wrong
}

TEST_CASE("sim::PassphraseLimiter follows a bounded number of pairs") {
    FakeClock clock;
    PassphrasePolicy policy;
    policy.max_entries = 3;
    PassphraseLimiter limiter(clock, policy);
    for (uid_t uid = 1; uid <= 5; ++uid) {
        attempt(limiter, uid, 1);
        clock.advance(1s);
    }
    CHECK(limiter.pairs() == 3);
    CHECK(limiter.failures(1, kCard) == 0); // the oldest went first
    CHECK(limiter.failures(5, kCard) == 1);
}
