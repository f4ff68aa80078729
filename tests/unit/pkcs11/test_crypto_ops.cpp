#include "crypto_ops.hpp"
#include "module_fixture.hpp"

using namespace pkcs11test;

namespace {

// A module started without a tokens file, a session on the accelerator
// slot (module-protected keys) and AES-GCM parameters.
struct Crypto : Module {
    std::shared_ptr<Session> session;
    unsigned char iv[12] = {};
    CK_GCM_PARAMS params{};
    CK_MECHANISM gcm{CKM_AES_GCM, &params, sizeof params};

    Crypto() {
        config.reload_keys = false;
        config.tokens_file.reset();
        start();
        session = instance->sessions().open(kAcceleratorSlot, CKF_SERIAL_SESSION);
        params.pIv = iv;
        params.ulIvLen = sizeof iv;
        params.ulIvBits = 8 * sizeof iv;
        params.ulTagBits = 128;
    }
    CK_OBJECT_HANDLE handle(const std::string& ident) const { return key(ident)->main_handle; }
    void init(OpKind kind, const std::string& ident = "mk") {
        op_init(*instance, *session, kind, &gcm, handle(ident));
    }
    CK_RV rv_of(const std::function<void()>& call) {
        try {
            call();
        } catch (const CkError& e) {
            return e.rv();
        }
        return CKR_OK;
    }
};

const Bytes kData{'p', 'l', 'a', 'i', 'n'};

} // namespace

TEST_CASE("pkcs11::op_single: a length query, a buffer too small, then the output") {
    Crypto c;
    c.init(OpKind::encrypt);
    CK_ULONG length = 0;
    op_single(*c.instance, *c.session, OpKind::encrypt, kData, {nullptr, &length});
    CHECK(length == kData.size() + 16); // known without asking the service
    CHECK(c.session->encrypt.has_value());

    Bytes out(length);
    CK_ULONG small = 3;
    CHECK(c.rv_of([&] {
        op_single(*c.instance, *c.session, OpKind::encrypt, kData, {out.data(), &small});
    }) == CKR_BUFFER_TOO_SMALL);
    CHECK(small == length);
    CHECK(c.session->encrypt.has_value()); // kept, with its result

    op_single(*c.instance, *c.session, OpKind::encrypt, kData, {out.data(), &length});
    CHECK(Bytes(out.begin(), out.begin() + 5) == kData);
    CHECK_FALSE(c.session->encrypt.has_value()); // ended
    int ops = 0;
    for (const auto& [module, n] : c.hsm.ops) {
        ops += n;
    }
    CHECK(ops == 1); // computed once, delivered twice
}

TEST_CASE("pkcs11::op_update and op_final: the parts are collected, then sent at once") {
    Crypto c;
    c.init(OpKind::encrypt);
    op_update(*c.session, OpKind::encrypt, Bytes{'a', 'b'});
    op_update(*c.session, OpKind::encrypt, Bytes{'c'});
    Bytes out(64);
    CK_ULONG length = out.size();
    op_final(*c.instance, *c.session, OpKind::encrypt, {out.data(), &length});
    REQUIRE(length == 3 + 16);
    CHECK(Bytes(out.begin(), out.begin() + 3) == Bytes{'a', 'b', 'c'});

    SUBCASE("and back") {
        c.init(OpKind::decrypt);
        Bytes plain(64);
        CK_ULONG plain_length = plain.size();
        op_single(*c.instance, *c.session, OpKind::decrypt,
                  std::span<const std::uint8_t>(out.data(), length), {plain.data(), &plain_length});
        CHECK(plain_length == 3);
    }
}

TEST_CASE("pkcs11::op_init and the operations refuse what they must") {
    Crypto c;
    CK_ULONG length = 0;
    SUBCASE("no operation of that kind") {
        CHECK(c.rv_of([&] {
            op_single(*c.instance, *c.session, OpKind::encrypt, kData, {nullptr, &length});
        }) == CKR_OPERATION_NOT_INITIALIZED);
    }
    SUBCASE("one already active") {
        c.init(OpKind::encrypt);
        CHECK(c.rv_of([&] { c.init(OpKind::encrypt); }) == CKR_OPERATION_ACTIVE);
    }
    SUBCASE("a key of another slot") {
        CHECK(c.rv_of([&] { c.init(OpKind::encrypt, "tk"); }) == CKR_KEY_HANDLE_INVALID);
    }
    SUBCASE("a token's key before login") {
        c.session = c.instance->sessions().open(kCardSlot, CKF_SERIAL_SESSION);
        CHECK(c.rv_of([&] { c.init(OpKind::encrypt, "tk"); }) == CKR_USER_NOT_LOGGED_IN);
    }
    SUBCASE("a secret key signs with a MAC mechanism only") {
        CHECK(c.rv_of([&] { c.init(OpKind::sign); }) == CKR_MECHANISM_INVALID);
    }
    SUBCASE("a failed decryption ends the operation") {
        c.init(OpKind::decrypt);
        Bytes out(64);
        length = out.size();
        CHECK(c.rv_of([&] {
            op_single(*c.instance, *c.session, OpKind::decrypt, Bytes{1, 2}, {out.data(), &length});
        }) == CKR_ENCRYPTED_DATA_INVALID);
        CHECK_FALSE(c.session->decrypt.has_value());
    }
    SUBCASE("every module gone: CKR_DEVICE_ERROR") {
        c.hsm.fail[1] = c.hsm.fail[2] = c.hsm.fail[3] = ErrorCode::module_not_usable;
        c.init(OpKind::encrypt);
        Bytes out(64);
        length = out.size();
        CHECK(c.rv_of([&] {
            op_single(*c.instance, *c.session, OpKind::encrypt, kData, {out.data(), &length});
        }) == CKR_DEVICE_ERROR);
    }
}
