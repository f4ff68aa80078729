#include "guard.hpp"

#include <doctest/doctest.h>
#include <map>
#include <stdexcept>

using namespace preloadrun;
using namespace preloadrun::pkcs11;

TEST_CASE("pkcs11::to_rv: each code's CK_RV") {
    // What applications see (libpreloadrun-pkcs11(7)) and the PKCS#11
    // end-to-end tests expect; wherever the error was raised.
    const std::map<ErrorCode, CK_RV> expected = {
        {ErrorCode::internal, CKR_GENERAL_ERROR},
        {ErrorCode::usage, CKR_ARGUMENTS_BAD},
        {ErrorCode::io, CKR_DEVICE_ERROR},
        {ErrorCode::corrupt, CKR_DEVICE_ERROR},
        {ErrorCode::not_found, CKR_KEY_HANDLE_INVALID},
        {ErrorCode::already_exists, CKR_FUNCTION_FAILED},
        {ErrorCode::wrong_passphrase, CKR_PIN_INCORRECT},
        {ErrorCode::permission, CKR_FUNCTION_FAILED},
        {ErrorCode::unavailable, CKR_DEVICE_ERROR},
        {ErrorCode::protocol, CKR_DEVICE_ERROR},
        {ErrorCode::timeout, CKR_DEVICE_ERROR},
        {ErrorCode::module_not_usable, CKR_DEVICE_ERROR},
        {ErrorCode::transient, CKR_DEVICE_ERROR},
        {ErrorCode::invalid_handle, CKR_DEVICE_ERROR},
        {ErrorCode::limit, CKR_DEVICE_MEMORY},
        {ErrorCode::crypto, CKR_FUNCTION_FAILED},
        {ErrorCode::bad_signature, CKR_SIGNATURE_INVALID},
        {ErrorCode::conflict, CKR_FUNCTION_FAILED},
        {ErrorCode::too_many_attempts, CKR_PIN_LOCKED},
    };
    REQUIRE(expected.size() == kErrorCodeCount);
    for (const auto& [code, rv] : expected) {
        CAPTURE(to_string(code));
        CHECK(to_rv(Error(code, "x")) == rv);
        CHECK(to_rv(Error(code, "x", Origin::peer)) == rv);
    }
}

TEST_CASE("pkcs11::guard maps what a body throws") {
    CHECK(guard("C_Test", [] { return CKR_OK; }) == CKR_OK);
    CHECK(guard("C_Test", []() -> CK_RV {
              throw Error(ErrorCode::wrong_passphrase, "no", Origin::peer);
          }) == CKR_PIN_INCORRECT);
    CHECK(guard("C_Test", []() -> CK_RV { throw CkError(CKR_SLOT_ID_INVALID, "slot"); }) ==
          CKR_SLOT_ID_INVALID);
    CHECK(guard("C_Test", []() -> CK_RV { throw std::runtime_error("?"); }) == CKR_GENERAL_ERROR);
}
