#pragma once
// What the PKCS#11 benchmarks (bench_pkcs11_*.cpp) add to bench_support.hpp:
// a PKCS#11 module loaded with dlopen the way an application does.
// Header-only: each benchmark is one translation unit.

#include "bench_support.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"

#include <dlfcn.h>
#include <optional>

namespace pkcs11_bench {

using namespace bench_support;

// ---- a PKCS#11 module, as an application uses it ------------------------------------------

class Module {
public:
    explicit Module(const std::string& path) {
        lib_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (lib_ == nullptr) {
            throw Broken(std::string("dlopen: ") + ::dlerror());
        }
        auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(lib_, "C_GetFunctionList"));
        if (get == nullptr) {
            throw Broken("no C_GetFunctionList in " + path);
        }
        check(get(&f), "C_GetFunctionList");
        CK_C_INITIALIZE_ARGS args{};
        args.flags = CKF_OS_LOCKING_OK;
        check(f->C_Initialize(&args), "C_Initialize");
    }
    Module(const Module&) = delete;
    Module& operator=(const Module&) = delete;
    ~Module() {
        if (f != nullptr) {
            f->C_Finalize(nullptr);
        }
        // Not dlclose'd: some modules leave threads or atexit handlers behind.
    }

    static void check(CK_RV rv, const std::string& what) {
        if (rv != CKR_OK) {
            char buf[32];
            std::snprintf(buf, sizeof buf, " (CKR 0x%lx)", static_cast<unsigned long>(rv));
            throw Broken(what + buf);
        }
    }

    CK_SLOT_ID slot_of(const std::string& label) {
        CK_ULONG n = 0;
        check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "C_GetSlotList");
        std::vector<CK_SLOT_ID> slots(n);
        check(f->C_GetSlotList(CK_TRUE, slots.data(), &n), "C_GetSlotList");
        for (CK_ULONG i = 0; i < n; ++i) {
            CK_TOKEN_INFO info{};
            check(f->C_GetTokenInfo(slots[i], &info), "C_GetTokenInfo");
            std::string l(reinterpret_cast<char*>(info.label), sizeof info.label);
            l.erase(l.find_last_not_of(' ') + 1);
            if (l == label) {
                return slots[i];
            }
        }
        throw Broken("no token labelled " + label);
    }

    CK_SESSION_HANDLE open(CK_SLOT_ID slot) {
        CK_SESSION_HANDLE s = 0;
        check(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
              "C_OpenSession");
        return s;
    }

    void login(CK_SESSION_HANDLE s, const std::string& pin) {
        std::string p = pin;
        const CK_RV rv = f->C_Login(s, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(p.data()),
                                    static_cast<CK_ULONG>(p.size()));
        if (rv != CKR_USER_ALREADY_LOGGED_IN) {
            check(rv, "C_Login");
        }
    }

    CK_OBJECT_HANDLE find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, unsigned char id) {
        CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_ID, &id, 1}};
        check(f->C_FindObjectsInit(s, t, 2), "C_FindObjectsInit");
        CK_OBJECT_HANDLE h = 0;
        CK_ULONG n = 0;
        check(f->C_FindObjects(s, &h, 1, &n), "C_FindObjects");
        check(f->C_FindObjectsFinal(s), "C_FindObjectsFinal");
        if (n != 1) {
            throw Broken("key not found");
        }
        return h;
    }

    // Throws unless one CKM_ECDSA signature made with `key` verifies with the
    // public key of the same CKA_ID (01): the peer signs with the key it says.
    void self_check(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key) {
        unsigned char digest[32] = {9, 8, 7};
        unsigned char sig[256];
        CK_ULONG len = sizeof sig;
        CK_MECHANISM mech{CKM_ECDSA, nullptr, 0};
        check(f->C_SignInit(s, &mech, key), "C_SignInit");
        check(f->C_Sign(s, digest, sizeof digest, sig, &len), "C_Sign");
        const CK_OBJECT_HANDLE pub = find(s, CKO_PUBLIC_KEY, 1);
        check(f->C_VerifyInit(s, &mech, pub), "C_VerifyInit");
        check(f->C_Verify(s, digest, sizeof digest, sig, len), "C_Verify");
    }

    // C_SignInit + C_Sign, CKM_ECDSA on a 32-byte digest.
    CK_RV sign_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key) {
        static unsigned char digest[32] = {1,   8,   15,  22,  29,  36,  43,  50,  57,  64,  71,
                                           78,  85,  92,  99,  106, 113, 120, 127, 134, 141, 148,
                                           155, 162, 169, 176, 183, 190, 197, 204, 211, 218};
        CK_MECHANISM mech{CKM_ECDSA, nullptr, 0};
        unsigned char sig[256];
        CK_ULONG len = sizeof sig;
        if (const CK_RV rv = f->C_SignInit(s, &mech, key); rv != CKR_OK) {
            return rv;
        }
        return f->C_Sign(s, digest, sizeof digest, sig, &len);
    }

    // The value of one attribute of an object.
    std::vector<unsigned char> attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE object,
                                         CK_ATTRIBUTE_TYPE type) {
        CK_ATTRIBUTE a{type, nullptr, 0};
        check(f->C_GetAttributeValue(s, object, &a, 1), "C_GetAttributeValue");
        std::vector<unsigned char> value(a.ulValueLen);
        a.pValue = value.data();
        check(f->C_GetAttributeValue(s, object, &a, 1), "C_GetAttributeValue");
        value.resize(a.ulValueLen);
        return value;
    }

    // C_SignInit + C_Sign, CKM_ECDSA on `digest`; the signature (r || s) in `sig`.
    CK_RV sign_digest(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key,
                      const std::vector<unsigned char>& digest, std::vector<unsigned char>& sig) {
        CK_MECHANISM mech{CKM_ECDSA, nullptr, 0};
        sig.resize(256);
        CK_ULONG len = static_cast<CK_ULONG>(sig.size());
        if (const CK_RV rv = f->C_SignInit(s, &mech, key); rv != CKR_OK) {
            return rv;
        }
        const CK_RV rv = f->C_Sign(s, const_cast<unsigned char*>(digest.data()),
                                   static_cast<CK_ULONG>(digest.size()), sig.data(), &len);
        sig.resize(rv == CKR_OK ? len : 0);
        return rv;
    }

    CK_FUNCTION_LIST_PTR f = nullptr;

private:
    void* lib_ = nullptr;
};

// ---- SoftHSM2 -------------------------------------------------------------------------------

// A SoftHSM2 token labelled `label` (user PIN `pin`, SO PIN 12345678) with its
// own configuration and token directory in `dir`, holding an EC P-256 key
// pair (label k1, CKA_ID 01) made with pkcs11-tool; the environment in which
// `softhsm` finds it (SOFTHSM2_CONF). Needs softhsm2-util and pkcs11-tool.
inline std::vector<std::string> softhsm_ec_token(const fs::path& dir, const std::string& softhsm,
                                                 const std::string& label, const std::string& pin,
                                                 const std::string& log) {
    const fs::path tokendir = dir / "softhsm";
    fs::create_directories(tokendir);
    const fs::path conf = dir / "softhsm2.conf";
    write_file(conf, "directories.tokendir = " + tokendir.string() +
                         "\nobjectstore.backend = file\nlog.level = ERROR\n");
    auto env = child_env({"SOFTHSM2_CONF=" + conf.string()});
    run_ok({"softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678",
            "--pin", pin},
           env, log);
    run_ok({"pkcs11-tool", "--module", softhsm, "--token-label", label, "--login", "--pin", pin,
            "--keypairgen", "--key-type", "EC:prime256v1", "--label", "k1", "--id", "01"},
           env, log);
    return env;
}

} // namespace pkcs11_bench
