#include "model/keywrap.hpp"
#include "model/token_unlocker.hpp"
#include "preloadrun/common/error.hpp"
#include "sim_test_util.hpp"
#include "support/errors.hpp"
#include "support/fake_clock.hpp"
#include "support/temp_dir.hpp"

#include <atomic>
#include <doctest/doctest.h>
#include <exception>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace preloadrun;
using namespace preloadrun::sim;
using namespace std::chrono_literals;

namespace {

using testsupport::code_of;

constexpr uid_t kVictim = 2000;
constexpr uid_t kAttacker = 2001;

using testsupport::FakeClock;

struct Setup {
    testsupport::TempDir tmp;
    std::unique_ptr<World> world = simtest::make_world(tmp.path());
    FakeClock clock;
    TokenUnlocker unlocker{*world, clock};
    CardRecord card;
    // The same card with a KDF that cannot run (0 iterations): unlocking it
    // throws Error(internal) if, and only if, the KDF is run.
    CardRecord tripwire;
    Setup() {
        auto info =
            world->create_token(hsm::TokenType::softcard, "card", SecureBuffer::from("right"));
        card = world->card(info.hash);
        tripwire = card;
        tripwire.iterations = 0;
    }
    ErrorCode try_wrong(uid_t uid, const std::string& passphrase, std::string* message = nullptr) {
        return code_of([&] { unlocker.unlock(card, SecureBuffer::from(passphrase), uid); },
                       message);
    }
};

} // namespace

TEST_CASE("sim::TokenUnlocker checks the passphrase") {
    Setup s;
    CHECK(s.unlocker.unlock(s.card, SecureBuffer::from("right"), kVictim).size() == 32);
    CHECK(s.try_wrong(kVictim, "wrong") == ErrorCode::wrong_passphrase);
    CHECK(s.unlocker.limiter().failures(kVictim, s.card.hash) == 1);
    SUBCASE("the KDF really runs for a try that is let through") {
        CHECK(code_of([&] {
                  s.unlocker.unlock(s.tripwire, SecureBuffer::from("other"), kVictim);
              }) == ErrorCode::internal);
        CHECK(s.unlocker.limiter().failures(kVictim, s.card.hash) == 1); // undecided: not counted
    }
}

TEST_CASE("sim::TokenUnlocker refuses a uid after 5 wrong passphrases, without the KDF") {
    Setup s;
    for (int i = 0; i < 5; ++i) {
        REQUIRE(s.try_wrong(kAttacker, "guess " + std::to_string(i)) ==
                ErrorCode::wrong_passphrase);
    }
    std::string message;
    CHECK(code_of([&] { s.unlocker.unlock(s.tripwire, SecureBuffer::from("guess 5"), kAttacker); },
                  &message) == ErrorCode::too_many_attempts);
    CHECK(message == "too many wrong passphrases for softcard 'card' from this user; try again "
                     "in 1 s");
    CHECK(message.find("guess") == std::string::npos);
    CHECK(code_of([&] { s.unlocker.unlock(s.card, SecureBuffer::from("right"), kAttacker); }) ==
          ErrorCode::too_many_attempts);

    SUBCASE("the victim, same token, is not locked out") {
        CHECK(s.unlocker.unlock(s.card, SecureBuffer::from("right"), kVictim).size() == 32);
    }
    SUBCASE("after the delay the right passphrase works and starts afresh") {
        s.clock.advance(1s);
        CHECK(s.unlocker.unlock(s.card, SecureBuffer::from("right"), kAttacker).size() == 32);
        CHECK(s.unlocker.limiter().failures(kAttacker, s.card.hash) == 0);
    }
    SUBCASE("the wait is rounded up to whole seconds") {
        s.clock.advance(1s);
        REQUIRE(s.try_wrong(kAttacker, "guess 6") == ErrorCode::wrong_passphrase);
        s.clock.advance(300ms);
        CHECK(s.try_wrong(kAttacker, "guess 7", &message) == ErrorCode::too_many_attempts);
        CHECK(message.find("try again in 2 s") != std::string::npos);
    }
}

TEST_CASE("sim::TokenUnlocker a wrong passphrase tried again is answered without the KDF") {
    Setup s;
    REQUIRE(s.try_wrong(kVictim, "typo") == ErrorCode::wrong_passphrase);
    std::string message;
    CHECK(code_of([&] { s.unlocker.unlock(s.tripwire, SecureBuffer::from("typo"), kVictim); },
                  &message) == ErrorCode::wrong_passphrase);
    CHECK(message == "wrong passphrase for softcard 'card'");
    CHECK(s.unlocker.limiter().failures(kVictim, s.card.hash) == 1);
}

TEST_CASE("sim::TokenUnlocker the same try from several threads counts once") {
    Setup s;
    for (const std::string passphrase : {"wrong", "right"}) {
        std::vector<std::thread> threads;
        std::vector<ErrorCode> codes(8, ErrorCode::internal);
        std::vector<std::size_t> sizes(8, 0);
        for (std::size_t i = 0; i < codes.size(); ++i) {
            threads.emplace_back([&, i] {
                try {
                    sizes[i] =
                        s.unlocker.unlock(s.card, SecureBuffer::from(passphrase), kVictim).size();
                    codes[i] = ErrorCode::usage; // stands for "no error" here
                } catch (const Error& e) {
                    codes[i] = e.code();
                }
            });
        }
        for (auto& t : threads) {
            t.join();
        }
        const bool right = passphrase == "right";
        for (std::size_t i = 0; i < codes.size(); ++i) {
            CHECK(codes[i] == (right ? ErrorCode::usage : ErrorCode::wrong_passphrase));
            CHECK(sizes[i] == (right ? 32u : 0u));
        }
        CHECK(s.unlocker.limiter().failures(kVictim, s.card.hash) == (right ? 0u : 1u));
    }
}

TEST_CASE("sim::TokenUnlocker gives each thread that shared a failed try an error of its own") {
    // One exception object caught in several threads at once is freed by
    // whichever lets it go last, while the others may still read it: each
    // waiter must get its own.
    Setup s;
    // The card with the KDF cost of a real token: its check lasts long
    // enough (tens of ms) for every thread to arrive while it runs and wait
    // for it. A wrong passphrase fails as it does with the card's own cost.
    CardRecord slow = s.card;
    slow.iterations = kDefaultKdfIterations;
    constexpr std::size_t kThreads = 8;
    std::vector<std::exception_ptr> errors(kThreads);
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < kThreads; ++i) {
        threads.emplace_back([&, i] {
            while (!go.load()) {
                std::this_thread::yield();
            }
            try {
                s.unlocker.unlock(slow, SecureBuffer::from("wrong"), kVictim);
            } catch (...) {
                errors[i] = std::current_exception();
            }
        });
    }
    go = true;
    for (auto& t : threads) {
        t.join();
    }
    std::set<const void*> objects;
    for (const auto& error : errors) {
        REQUIRE(error);
        std::string message;
        CHECK(code_of([&] { std::rethrow_exception(error); }, &message) ==
              ErrorCode::wrong_passphrase);
        CHECK(message == "wrong passphrase for softcard 'card'");
        try {
            std::rethrow_exception(error);
        } catch (const Error& e) {
            objects.insert(&e);
        }
    }
    CHECK(objects.size() == kThreads);
    CHECK(s.unlocker.limiter().failures(kVictim, s.card.hash) == 1);
}
