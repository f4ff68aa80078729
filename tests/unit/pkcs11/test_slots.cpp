#include "slots.hpp"

#include <cstring>
#include <doctest/doctest.h>
#include <string>

using namespace preloadrun;
using namespace preloadrun::pkcs11;

namespace {
std::string text(const unsigned char* p, std::size_t n) {
    std::string s(reinterpret_cast<const char*>(p), n);
    s.erase(s.find_last_not_of(' ') + 1);
    return s;
}
} // namespace

TEST_CASE("pkcs11::Slots") {
    hsm::TokenInfo card{hsm::TokenType::softcard, "card1", Bytes(20, 0xab)};
    Slots slots({card}, true);
    REQUIRE(slots.count() == 2);

    SUBCASE("slot 0 is the load-shared accelerator, no login") {
        CK_TOKEN_INFO info{};
        slots.token_info(kAcceleratorSlot, info);
        CHECK(text(info.label, sizeof info.label) == "loadshared accelerator");
        CHECK((info.flags & CKF_LOGIN_REQUIRED) == 0);
        CHECK((info.flags & CKF_RNG) != 0);
    }
    SUBCASE("a token slot per softcard, login required") {
        CK_TOKEN_INFO info{};
        slots.token_info(1, info);
        CHECK(text(info.label, sizeof info.label) == "card1");
        CHECK((info.flags &
               (CKF_LOGIN_REQUIRED | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED)) ==
              (CKF_LOGIN_REQUIRED | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED));
        CHECK(slots.slot_of_token_hex(to_hex(card.hash)) == 1);
        CHECK(slots.slot_of_token_hex(std::string(40, 'A').replace(1, 1, "B")) != 1);
    }
    SUBCASE("keys go to the slot of their token") {
        hsm::KeyInfo k;
        CHECK(slots.slot_of(k) == kAcceleratorSlot);
        k.token = card;
        CHECK(slots.slot_of(k) == 1);
        k.token->hash = Bytes(20, 0x01);
        CHECK_FALSE(slots.slot_of(k).has_value());
    }
    SUBCASE("invalid slot") {
        CHECK_THROWS_AS(slots.check(2), CkError);
    }
    SUBCASE("token handles per module") {
        slots.set_handle(1, 3, TokenHandle{77, 4});
        CHECK(slots.handle(1, 3)->handle == 77);
        slots.forget_handle(1, 3);
        CHECK_FALSE(slots.handle(1, 3).has_value());
    }
}
