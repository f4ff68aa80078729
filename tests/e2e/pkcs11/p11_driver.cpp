// Test driver: loads the PKCS#11 module with dlopen and drives it through its
// function list, the way an application does. One scenario per command:
//
//   p11_driver sign MODULE TOKEN PIN ID COUNT THREADS [MECH]
//       THREADS threads, each with its own session, sign COUNT times with the
//       private key of CKA_ID=ID (hex) and verify each signature with the
//       public key. MECH: ecdsa (default), rsa, pss. Prints "ok=N errors=M".
//   p11_driver sign-until MODULE TOKEN PIN ID STOPFILE THREADS
//       the same, with ecdsa, until the file STOPFILE exists; then prints
//       "ok=N errors=M first=0x.." and, for each error, a line
//       "error rv=0x.. ms=T" (T: milliseconds since the start).
//   p11_driver fork MODULE TOKEN PIN ID
//       signs, forks; the child must see CKR_CRYPTOKI_NOT_INITIALIZED, then
//       initialise afresh and sign; the parent signs again.
//   p11_driver initargs MODULE
//       the four forms of C_Initialize arguments and the lifecycle errors.
//   p11_driver attrs MODULE TOKEN PIN ID
//       C_GetAttributeValue conventions on the private and public key.
//   p11_driver session-key MODULE COUNT
//       a session EC key in the accelerator slot, signed with COUNT times
//       (one per second of a test's fault), printing each CK_RV.
//   p11_driver gcm MODULE
//       AES-GCM with a session AES-256 key: round trip with AAD, a tampered
//       tag and a wrong AAD refused, multi-part decryption, unsafe IV and tag
//       sizes refused at C_EncryptInit/C_DecryptInit. Prints "gcm ok".
//   p11_driver rsa-pkcs MODULE
//       CKM_RSA_PKCS decryption with a session RSA-2048 key: a round trip,
//       then ciphertexts of badly padded blocks (made with the raw public
//       key), each refused with CKR_ENCRYPTED_DATA_INVALID. Prints
//       "rsa-pkcs ok".
//   p11_driver destroy MODULE TOKEN PIN ID CLASS
//       in a read/write session of TOKEN's slot, logged in with PIN unless
//       PIN is "-", C_DestroyObject of the CLASS (public or private) key
//       object with CKA_ID=ID. Prints "rv=0x.. left=N": the CK_RV and how
//       many objects of that class and CKA_ID a new session finds afterwards.
//   p11_driver null-pin MODULE TOKEN
//       C_Login with a NULL PIN (length 0, then 6) in a session of TOKEN's
//       slot, then as the security officer, then C_InitPIN. Prints
//       "rv=0x.. rv=0x.. so=0x.. initpin=0x..".
//   p11_driver interfaces MODULE TOKEN PIN
//       PKCS#11 3.0: C_GetInterfaceList and C_GetInterface (the 3.0 and 2.40
//       interfaces, the 3.0 one the default), C_GetInfo through each,
//       C_LoginUser, C_SessionCancel of an active C_SignInit, a message-based
//       function. Prints "interfaces=... default=... info=... loginuser=0x..
//       cancel=0x.. after=0x.. message=0x..".
// Exit status 0 when the scenario passed, 1 otherwise (with a message).

#include "preloadrun/pkcs11/cryptoki.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dlfcn.h>
#include <iostream>
#include <mutex>
#include <openssl/bn.h>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utility>
#include <vector>

namespace {

CK_FUNCTION_LIST_PTR f = nullptr;

[[noreturn]] void fail(const std::string& what, CK_RV rv = CKR_OK) {
    std::cerr << "FAIL: " << what;
    if (rv != CKR_OK) {
        std::cerr << " (CKR 0x" << std::hex << rv << std::dec << ")";
    }
    std::cerr << std::endl;
    std::exit(1);
}

void check(CK_RV rv, const std::string& what, CK_RV want = CKR_OK) {
    if (rv != want) {
        std::cerr << "FAIL: " << what << ": got 0x" << std::hex << rv << ", want 0x" << want
                  << std::dec << std::endl;
        std::exit(1);
    }
}

void* loaded = nullptr;

void load(const char* path) {
    void* lib = ::dlopen(path, RTLD_NOW | RTLD_LOCAL);
    loaded = lib;
    if (lib == nullptr) {
        fail(std::string("dlopen: ") + ::dlerror());
    }
    auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(lib, "C_GetFunctionList"));
    if (get == nullptr) {
        fail("no C_GetFunctionList");
    }
    check(get(&f), "C_GetFunctionList");
}

void init_os_locking() {
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    check(f->C_Initialize(&args), "C_Initialize");
}

std::vector<unsigned char> from_hex(const std::string& hex) {
    std::vector<unsigned char> out;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        out.push_back(static_cast<unsigned char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    return out;
}

CK_SLOT_ID slot_of(const std::string& label) {
    CK_ULONG n = 0;
    check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "C_GetSlotList count");
    std::vector<CK_SLOT_ID> slots(n);
    check(f->C_GetSlotList(CK_TRUE, slots.data(), &n), "C_GetSlotList");
    for (auto s : slots) {
        CK_TOKEN_INFO info{};
        check(f->C_GetTokenInfo(s, &info), "C_GetTokenInfo");
        std::string l(reinterpret_cast<char*>(info.label), sizeof info.label);
        l.erase(l.find_last_not_of(' ') + 1);
        if (l == label) {
            return s;
        }
    }
    fail("no token " + label);
}

CK_OBJECT_HANDLE find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, std::vector<unsigned char> id) {
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_ID, id.data(), id.size()}};
    check(f->C_FindObjectsInit(s, t, 2), "C_FindObjectsInit");
    CK_OBJECT_HANDLE h = 0;
    CK_ULONG n = 0;
    check(f->C_FindObjects(s, &h, 1, &n), "C_FindObjects");
    check(f->C_FindObjectsFinal(s), "C_FindObjectsFinal");
    if (n != 1) {
        fail("key not found");
    }
    return h;
}

CK_SESSION_HANDLE open_login(CK_SLOT_ID slot, const std::string& pin) {
    CK_SESSION_HANDLE s = 0;
    check(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
          "C_OpenSession");
    CK_RV rv = f->C_Login(
        s, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(const_cast<char*>(pin.data())), pin.size());
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        fail("C_Login", rv);
    }
    return s;
}

// One sign + verify; returns the first non-OK CK_RV.
CK_RV sign_verify(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub,
                  const std::string& mech_name) {
    unsigned char digest[32];
    for (unsigned i = 0; i < 32; ++i) {
        digest[i] = static_cast<unsigned char>(i * 7 + 1);
    }
    CK_RSA_PKCS_PSS_PARAMS pss{CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_MECHANISM mech{CKM_ECDSA, nullptr, 0};
    if (mech_name == "rsa") {
        mech = {CKM_SHA256_RSA_PKCS, nullptr, 0};
    } else if (mech_name == "pss") {
        mech = {CKM_SHA256_RSA_PKCS_PSS, &pss, sizeof pss};
    }
    unsigned char sig[1024];
    CK_ULONG len = sizeof sig;
    if (CK_RV rv = f->C_SignInit(s, &mech, priv); rv != CKR_OK) {
        return rv;
    }
    if (CK_RV rv = f->C_Sign(s, digest, sizeof digest, sig, &len); rv != CKR_OK) {
        return rv;
    }
    if (CK_RV rv = f->C_VerifyInit(s, &mech, pub); rv != CKR_OK) {
        return rv;
    }
    return f->C_Verify(s, digest, sizeof digest, sig, len);
}

// THREADS threads, each with its own session of `slot` and the key pair of
// CKA_ID `id`, each running loop(session, private key, public key).
template <class Loop>
void with_signers(CK_SLOT_ID slot, const std::vector<unsigned char>& id, int threads, Loop loop) {
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&] {
            CK_SESSION_HANDLE s = 0;
            check(f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &s), "open");
            loop(s, find(s, CKO_PRIVATE_KEY, id), find(s, CKO_PUBLIC_KEY, id));
            f->C_CloseSession(s);
        });
    }
    for (auto& th : pool) {
        th.join();
    }
}

int cmd_sign_until(char** argv) {
    load(argv[2]);
    const std::string token = argv[3], pin = argv[4], stop = argv[6];
    const auto id = from_hex(argv[5]);
    const int threads = std::stoi(argv[7]);
    init_os_locking();
    const CK_SLOT_ID slot = slot_of(token);
    open_login(slot, pin);
    const auto start = std::chrono::steady_clock::now();
    std::atomic<bool> stopping{false};
    std::atomic<long> ok{0};
    std::mutex mutex;
    std::vector<std::pair<CK_RV, long>> errors;
    std::thread watcher([&] {
        while (::access(stop.c_str(), F_OK) != 0) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        stopping = true;
    });
    with_signers(slot, id, threads,
                 [&](CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub) {
                     while (!stopping.load()) {
                         const CK_RV rv = sign_verify(s, priv, pub, "ecdsa");
                         if (rv == CKR_OK) {
                             ++ok;
                             continue;
                         }
                         const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::steady_clock::now() - start)
                                             .count();
                         std::lock_guard lock(mutex);
                         errors.emplace_back(rv, static_cast<long>(ms));
                     }
                 });
    watcher.join();
    check(f->C_Finalize(nullptr), "C_Finalize");
    std::cout << "ok=" << ok << " errors=" << errors.size() << " first=0x" << std::hex
              << (errors.empty() ? CKR_OK : errors.front().first) << std::dec << "\n";
    for (const auto& [rv, ms] : errors) {
        std::cout << "error rv=0x" << std::hex << rv << std::dec << " ms=" << ms << "\n";
    }
    std::cout << std::flush;
    return errors.empty() ? 0 : 1;
}

int cmd_sign(char** argv) {
    load(argv[2]);
    const std::string token = argv[3], pin = argv[4], mech = argv[8] ? argv[8] : "ecdsa";
    const auto id = from_hex(argv[5]);
    const int count = std::stoi(argv[6]), threads = std::stoi(argv[7]);
    init_os_locking();
    const CK_SLOT_ID slot = slot_of(token);
    open_login(slot, pin);
    std::atomic<int> ok{0}, errors{0};
    std::atomic<CK_RV> first{CKR_OK};
    with_signers(slot, id, threads,
                 [&](CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv, CK_OBJECT_HANDLE pub) {
                     for (int i = 0; i < count; ++i) {
                         const CK_RV rv = sign_verify(s, priv, pub, mech);
                         if (rv == CKR_OK) {
                             ++ok;
                         } else {
                             CK_RV none = CKR_OK;
                             first.compare_exchange_strong(none, rv);
                             ++errors;
                         }
                     }
                 });
    check(f->C_Finalize(nullptr), "C_Finalize");
    std::cout << "ok=" << ok << " errors=" << errors << " first=0x" << std::hex << first.load()
              << std::endl;
    return errors == 0 ? 0 : 1;
}

int cmd_fork(char** argv) {
    load(argv[2]);
    const std::string token = argv[3], pin = argv[4];
    const auto id = from_hex(argv[5]);
    init_os_locking();
    auto s = open_login(slot_of(token), pin);
    check(sign_verify(s, find(s, CKO_PRIVATE_KEY, id), find(s, CKO_PUBLIC_KEY, id), "ecdsa"),
          "parent sign before fork");
    const pid_t child = ::fork();
    if (child == 0) {
        CK_ULONG n = 0;
        check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "child: call before C_Initialize",
              CKR_CRYPTOKI_NOT_INITIALIZED);
        init_os_locking();
        auto cs = open_login(slot_of(token), pin);
        check(sign_verify(cs, find(cs, CKO_PRIVATE_KEY, id), find(cs, CKO_PUBLIC_KEY, id), "ecdsa"),
              "child sign");
        check(f->C_Finalize(nullptr), "child C_Finalize");
        ::_exit(0);
    }
    check(sign_verify(s, find(s, CKO_PRIVATE_KEY, id), find(s, CKO_PUBLIC_KEY, id), "ecdsa"),
          "parent sign after fork");
    int status = 0;
    ::waitpid(child, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fail("child failed");
    }
    check(f->C_Finalize(nullptr), "parent C_Finalize");
    std::cout << "fork ok" << std::endl;
    return 0;
}

CK_RV fake_create(CK_VOID_PTR_PTR) {
    return CKR_OK;
}
CK_RV fake_other(CK_VOID_PTR) {
    return CKR_OK;
}

int cmd_initargs(char** argv) {
    load(argv[2]);
    CK_ULONG n = 0;
    check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "before init", CKR_CRYPTOKI_NOT_INITIALIZED);
    check(f->C_Finalize(nullptr), "finalize before init", CKR_CRYPTOKI_NOT_INITIALIZED);
    // 1. NULL
    check(f->C_Initialize(nullptr), "NULL args");
    check(f->C_Initialize(nullptr), "second init", CKR_CRYPTOKI_ALREADY_INITIALIZED);
    check(f->C_Finalize(nullptr), "finalize");
    // 2. no mutex functions, no flag
    CK_C_INITIALIZE_ARGS a{};
    check(f->C_Initialize(&a), "args without functions or flag");
    check(f->C_Finalize(nullptr), "finalize");
    // 3. CKF_OS_LOCKING_OK
    a.flags = CKF_OS_LOCKING_OK;
    check(f->C_Initialize(&a), "CKF_OS_LOCKING_OK");
    check(f->C_Finalize(nullptr), "finalize");
    // 4. mutex functions only: the module only locks with OS primitives
    CK_C_INITIALIZE_ARGS m{};
    m.CreateMutex = fake_create;
    m.DestroyMutex = fake_other;
    m.LockMutex = fake_other;
    m.UnlockMutex = fake_other;
    check(f->C_Initialize(&m), "mutex functions only", CKR_CANT_LOCK);
    m.flags = CKF_OS_LOCKING_OK;
    check(f->C_Initialize(&m), "mutex functions and CKF_OS_LOCKING_OK");
    check(f->C_Finalize(nullptr), "finalize");
    CK_C_INITIALIZE_ARGS partial{};
    partial.CreateMutex = fake_create;
    check(f->C_Initialize(&partial), "some mutex functions", CKR_ARGUMENTS_BAD);
    CK_C_INITIALIZE_ARGS reserved{};
    reserved.pReserved = &reserved;
    check(f->C_Initialize(&reserved), "pReserved set", CKR_ARGUMENTS_BAD);
    check(f->C_Initialize(nullptr), "init again");
    check(f->C_Finalize(&a), "finalize with argument", CKR_ARGUMENTS_BAD);
    CK_INFO info{};
    check(f->C_GetInfo(&info), "C_GetInfo");
    if (info.cryptokiVersion.major != 2 || info.cryptokiVersion.minor != 40) {
        fail("cryptoki version is not 2.40");
    }
    check(f->C_DigestEncryptUpdate(1, nullptr, 0, nullptr, nullptr), "unsupported function",
          CKR_FUNCTION_NOT_SUPPORTED);
    check(f->C_Finalize(nullptr), "finalize");
    check(f->C_Finalize(nullptr), "finalize twice", CKR_CRYPTOKI_NOT_INITIALIZED);
    std::cout << "initargs ok" << std::endl;
    return 0;
}

int cmd_attrs(char** argv) {
    load(argv[2]);
    const auto id = from_hex(argv[5]);
    init_os_locking();
    auto s = open_login(slot_of(argv[3]), argv[4]);
    const auto priv = find(s, CKO_PRIVATE_KEY, id);
    const auto pub = find(s, CKO_PUBLIC_KEY, id);
    // Length query, then the value.
    CK_ATTRIBUTE point{CKA_EC_POINT, nullptr, 0};
    check(f->C_GetAttributeValue(s, pub, &point, 1), "EC_POINT length");
    if (point.ulValueLen != 67) {
        fail("EC_POINT of P-256 should be 67 bytes (DER OCTET STRING)");
    }
    std::vector<unsigned char> buf(point.ulValueLen);
    point.pValue = buf.data();
    check(f->C_GetAttributeValue(s, pub, &point, 1), "EC_POINT value");
    if (buf[0] != 0x04 || buf[1] != 65 || buf[2] != 0x04) {
        fail("EC_POINT is not a DER OCTET STRING of an uncompressed point");
    }
    CK_ATTRIBUTE small{CKA_EC_POINT, buf.data(), 10};
    check(f->C_GetAttributeValue(s, pub, &small, 1), "small buffer", CKR_BUFFER_TOO_SMALL);
    if (small.ulValueLen != CK_UNAVAILABLE_INFORMATION) {
        fail("too small buffer must give CK_UNAVAILABLE_INFORMATION");
    }
    CK_ATTRIBUTE secret{CKA_VALUE, nullptr, 0};
    check(f->C_GetAttributeValue(s, priv, &secret, 1), "CKA_VALUE", CKR_ATTRIBUTE_SENSITIVE);
    if (secret.ulValueLen != CK_UNAVAILABLE_INFORMATION) {
        fail("sensitive attribute must give CK_UNAVAILABLE_INFORMATION");
    }
    CK_ATTRIBUTE bogus{CKA_MODULUS, nullptr, 0};
    check(f->C_GetAttributeValue(s, pub, &bogus, 1), "CKA_MODULUS on EC",
          CKR_ATTRIBUTE_TYPE_INVALID);
    CK_ATTRIBUTE params{CKA_EC_PARAMS, nullptr, 0};
    check(f->C_GetAttributeValue(s, priv, &params, 1), "private EC_PARAMS");
    CK_BBOOL sensitive = CK_FALSE;
    CK_ATTRIBUTE sens{CKA_SENSITIVE, &sensitive, sizeof sensitive};
    check(f->C_GetAttributeValue(s, priv, &sens, 1), "CKA_SENSITIVE");
    if (sensitive != CK_TRUE) {
        fail("private key must be sensitive");
    }
    check(f->C_Finalize(nullptr), "C_Finalize");
    std::cout << "attrs ok" << std::endl;
    return 0;
}

int cmd_session_key(char** argv) {
    load(argv[2]);
    const int count = std::stoi(argv[3]);
    init_os_locking();
    CK_SESSION_HANDLE s = 0;
    check(f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s), "open");
    unsigned char p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE pubt[] = {{CKA_EC_PARAMS, p256, sizeof p256}, {CKA_TOKEN, &no, sizeof no}};
    CK_ATTRIBUTE privt[] = {{CKA_TOKEN, &no, sizeof no}};
    CK_MECHANISM gen{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
    CK_OBJECT_HANDLE pub = 0, priv = 0;
    check(f->C_GenerateKeyPair(s, &gen, pubt, 2, privt, 1, &pub, &priv), "generate session key");
    std::cout << "generated" << std::endl;
    for (int i = 0; i < count; ++i) {
        std::string line;
        std::getline(std::cin, line); // the test says when to sign
        std::cout << "rv=0x" << std::hex << sign_verify(s, priv, pub, "ecdsa") << std::dec
                  << std::endl;
    }
    f->C_Finalize(nullptr);
    return 0;
}

int cmd_gcm(char** argv) {
    // AES-GCM through the module: a session AES-256 key, a round trip with
    // AAD, a tampered tag and a wrong AAD refused, and multi-part decryption.
    load(argv[2]);
    init_os_locking();
    CK_SESSION_HANDLE s = 0;
    check(f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s), "open");
    CK_ULONG len32 = 32;
    CK_BBOOL no = CK_FALSE;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE keyt[] = {{CKA_VALUE_LEN, &len32, sizeof len32},
                           {CKA_TOKEN, &no, sizeof no},
                           {CKA_ENCRYPT, &yes, sizeof yes},
                           {CKA_DECRYPT, &yes, sizeof yes}};
    CK_MECHANISM gen{CKM_AES_KEY_GEN, nullptr, 0};
    CK_OBJECT_HANDLE key = 0;
    check(f->C_GenerateKey(s, &gen, keyt, 4, &key), "generate AES key");

    unsigned char iv[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    unsigned char aad[3] = {'h', 'd', 'r'};
    CK_GCM_PARAMS params{};
    params.pIv = iv;
    params.ulIvLen = sizeof iv;
    params.ulIvBits = 8 * sizeof iv;
    params.pAAD = aad;
    params.ulAADLen = sizeof aad;
    params.ulTagBits = 128;
    CK_MECHANISM mech{CKM_AES_GCM, &params, sizeof params};

    std::vector<unsigned char> plain(100);
    for (std::size_t i = 0; i < plain.size(); ++i) {
        plain[i] = static_cast<unsigned char>(i * 7);
    }
    check(f->C_EncryptInit(s, &mech, key), "C_EncryptInit");
    CK_ULONG ct_len = 0;
    check(f->C_Encrypt(s, plain.data(), plain.size(), nullptr, &ct_len), "C_Encrypt length");
    std::vector<unsigned char> ct(ct_len);
    check(f->C_Encrypt(s, plain.data(), plain.size(), ct.data(), &ct_len), "C_Encrypt");
    ct.resize(ct_len);
    if (ct.size() != plain.size() + 16) {
        fail("ciphertext is not plaintext + 16-byte tag");
    }

    auto decrypt = [&](std::vector<unsigned char> input, CK_RV want) {
        check(f->C_DecryptInit(s, &mech, key), "C_DecryptInit");
        std::vector<unsigned char> out(input.size());
        CK_ULONG out_len = out.size();
        CK_RV rv = f->C_Decrypt(s, input.data(), input.size(), out.data(), &out_len);
        check(rv, "C_Decrypt", want);
        out.resize(rv == CKR_OK ? out_len : 0);
        return out;
    };
    if (decrypt(ct, CKR_OK) != plain) {
        fail("decrypted text differs");
    }
    auto tampered = ct;
    tampered.back() ^= 1;
    decrypt(tampered, CKR_ENCRYPTED_DATA_INVALID);
    aad[0] = 'X';
    decrypt(ct, CKR_ENCRYPTED_DATA_INVALID);
    aad[0] = 'h';

    // Multi-part: the data in two pieces, the result at C_DecryptFinal.
    check(f->C_DecryptInit(s, &mech, key), "C_DecryptInit (multi-part)");
    std::vector<unsigned char> out(plain.size() + 16);
    CK_ULONG part = out.size();
    check(f->C_DecryptUpdate(s, ct.data(), 40, out.data(), &part), "C_DecryptUpdate 1");
    CK_ULONG part2 = out.size();
    check(f->C_DecryptUpdate(s, ct.data() + 40, ct.size() - 40, out.data(), &part2),
          "C_DecryptUpdate 2");
    CK_ULONG last = out.size();
    check(f->C_DecryptFinal(s, out.data(), &last), "C_DecryptFinal");
    out.resize(last);
    if (out != plain) {
        fail("multi-part decryption differs");
    }

    // Unsafe sizes are refused before anything is asked of the HSM.
    unsigned char long_iv[200] = {};
    auto with_sizes = [&](CK_ULONG iv_len, CK_ULONG tag_bits) {
        CK_GCM_PARAMS p = params;
        p.pIv = long_iv;
        p.ulIvLen = iv_len;
        p.ulIvBits = 8 * iv_len;
        p.ulTagBits = tag_bits;
        return p;
    };
    const std::pair<CK_ULONG, CK_ULONG> unsafe[] = {{8, 128}, {11, 128}, {129, 128},
                                                    {12, 32}, {12, 64},  {12, 100}};
    for (const auto& [iv_len, tag_bits] : unsafe) {
        CK_GCM_PARAMS p = with_sizes(iv_len, tag_bits);
        CK_MECHANISM m{CKM_AES_GCM, &p, sizeof p};
        const std::string what =
            "IV " + std::to_string(iv_len) + " bytes, tag " + std::to_string(tag_bits) + " bits";
        check(f->C_EncryptInit(s, &m, key), "C_EncryptInit, " + what, CKR_MECHANISM_PARAM_INVALID);
        check(f->C_DecryptInit(s, &m, key), "C_DecryptInit, " + what, CKR_MECHANISM_PARAM_INVALID);
    }
    // The longest IV and the shortest tag accepted work end to end.
    params = with_sizes(128, 96);
    check(f->C_EncryptInit(s, &mech, key), "C_EncryptInit (IV 128, tag 96)");
    ct.assign(plain.size() + 12, 0);
    ct_len = ct.size();
    check(f->C_Encrypt(s, plain.data(), plain.size(), ct.data(), &ct_len), "C_Encrypt (tag 96)");
    if (decrypt(ct, CKR_OK) != plain) {
        fail("IV 128, tag 96: decrypted text differs");
    }
    check(f->C_Finalize(nullptr), "C_Finalize");
    std::cout << "gcm ok" << std::endl;
    return 0;
}

CK_ULONG count_objects(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, std::vector<unsigned char> id) {
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_ID, id.data(), id.size()}};
    check(f->C_FindObjectsInit(s, t, 2), "C_FindObjectsInit");
    CK_OBJECT_HANDLE found[16];
    CK_ULONG n = 0;
    check(f->C_FindObjects(s, found, 16, &n), "C_FindObjects");
    check(f->C_FindObjectsFinal(s), "C_FindObjectsFinal");
    return n;
}

int cmd_destroy(char** argv) {
    load(argv[2]);
    init_os_locking();
    const std::string token = argv[3], pin = argv[4], cls_name = argv[6];
    const auto id = from_hex(argv[5]);
    const CK_OBJECT_CLASS cls = cls_name == "private" ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY;
    const CK_SLOT_ID slot = slot_of(token);
    CK_SESSION_HANDLE s = 0;
    if (pin == "-") {
        check(f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
              "C_OpenSession");
    } else {
        s = open_login(slot, pin);
    }
    const CK_RV rv = f->C_DestroyObject(s, find(s, cls, id));
    CK_SESSION_HANDLE again = 0;
    check(f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &again), "C_OpenSession");
    const CK_ULONG left = count_objects(again, cls, id);
    std::cout << "rv=0x" << std::hex << rv << std::dec << " left=" << left << std::endl;
    check(f->C_Finalize(nullptr), "C_Finalize");
    return 0;
}

int cmd_interfaces(char** argv) {
    load(argv[2]);
    using GetList = CK_RV (*)(CK_INTERFACE_PTR, CK_ULONG_PTR);
    using Get = CK_RV (*)(CK_UTF8CHAR_PTR, CK_VERSION_PTR, CK_INTERFACE_PTR_PTR, CK_FLAGS);
    auto get_list = reinterpret_cast<GetList>(::dlsym(loaded, "C_GetInterfaceList"));
    auto get = reinterpret_cast<Get>(::dlsym(loaded, "C_GetInterface"));
    if (get_list == nullptr || get == nullptr) {
        fail("no C_GetInterfaceList or C_GetInterface");
    }
    CK_ULONG n = 0;
    check(get_list(nullptr, &n), "C_GetInterfaceList (count)");
    std::vector<CK_INTERFACE> list(n);
    check(get_list(list.data(), &n), "C_GetInterfaceList");
    std::string names;
    for (const auto& i : list) {
        const auto* fl = static_cast<CK_FUNCTION_LIST*>(i.pFunctionList);
        names += std::string(names.empty() ? "" : ",") +
                 reinterpret_cast<const char*>(i.pInterfaceName) + "/" +
                 std::to_string(fl->version.major) + "." + std::to_string(fl->version.minor);
    }
    CK_INTERFACE_PTR def = nullptr;
    check(get(nullptr, nullptr, &def, 0), "C_GetInterface (default)");
    auto* f3 = static_cast<CK_FUNCTION_LIST_3_0*>(def->pFunctionList);
    CK_VERSION v240{2, 40};
    CK_INTERFACE_PTR old = nullptr;
    check(get(nullptr, &v240, &old, 0), "C_GetInterface (2.40)");
    CK_VERSION v99{9, 9};
    CK_INTERFACE_PTR none = nullptr;
    const CK_RV missing = get(nullptr, &v99, &none, 0);
    f = &f3->v2;
    init_os_locking();
    CK_INFO info3{};
    CK_INFO info2{};
    check(f3->v2.C_GetInfo(&info3), "C_GetInfo (3.0)");
    check(static_cast<CK_FUNCTION_LIST*>(old->pFunctionList)->C_GetInfo(&info2),
          "C_GetInfo (2.40)");
    CK_SESSION_HANDLE s = 0;
    check(f->C_OpenSession(slot_of(argv[3]), CKF_SERIAL_SESSION, nullptr, nullptr, &s),
          "C_OpenSession");
    std::string pin(argv[4]);
    CK_UTF8CHAR user[] = {'a', 'n', 'y'};
    const CK_RV login = f3->C_LoginUser(s, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(pin.data()),
                                        pin.size(), user, sizeof user);
    CK_OBJECT_HANDLE key = find(s, CKO_PRIVATE_KEY, {0x01});
    CK_MECHANISM ecdsa{CKM_ECDSA, nullptr, 0};
    check(f->C_SignInit(s, &ecdsa, key), "C_SignInit");
    const CK_RV cancel = f3->C_SessionCancel(s, CKF_SIGN);
    unsigned char digest[32] = {};
    unsigned char sig[128];
    CK_ULONG sig_len = sizeof sig;
    const CK_RV after = f->C_Sign(s, digest, sizeof digest, sig, &sig_len);
    const CK_RV message = f3->C_MessageSignInit(s, &ecdsa, key);
    std::cout << "interfaces=" << names << " default=" << int(f3->v2.version.major) << "."
              << int(f3->v2.version.minor) << " info=" << int(info3.cryptokiVersion.major) << "."
              << int(info3.cryptokiVersion.minor) << "," << int(info2.cryptokiVersion.major) << "."
              << int(info2.cryptokiVersion.minor) << std::hex << " missing=0x" << missing
              << " loginuser=0x" << login << " cancel=0x" << cancel << " after=0x" << after
              << " message=0x" << message << std::dec << std::endl;
    check(f->C_Finalize(nullptr), "C_Finalize");
    return 0;
}

int cmd_null_pin(char** argv) {
    load(argv[2]);
    init_os_locking();
    CK_SESSION_HANDLE s = 0;
    check(f->C_OpenSession(slot_of(argv[3]), CKF_SERIAL_SESSION, nullptr, nullptr, &s),
          "C_OpenSession");
    const CK_RV empty = f->C_Login(s, CKU_USER, nullptr, 0);
    const CK_RV sized = f->C_Login(s, CKU_USER, nullptr, 6);
    CK_UTF8CHAR pin[] = {'s', 'e', 'c', 'r', 'e', 't'};
    const CK_RV so = f->C_Login(s, CKU_SO, pin, sizeof pin);
    const CK_RV init_pin = f->C_InitPIN(s, pin, sizeof pin);
    std::cout << std::hex << "rv=0x" << empty << " rv=0x" << sized << " so=0x" << so
              << " initpin=0x" << init_pin << std::dec << std::endl;
    check(f->C_Finalize(nullptr), "C_Finalize");
    return 0;
}

// c = m^e mod n for a block m of the modulus' size: any encoding at all.
std::vector<unsigned char> raw_rsa(const std::vector<unsigned char>& modulus,
                                   const std::vector<unsigned char>& exponent,
                                   const std::vector<unsigned char>& block) {
    BN_CTX* ctx = BN_CTX_new();
    BIGNUM* n = BN_bin2bn(modulus.data(), static_cast<int>(modulus.size()), nullptr);
    BIGNUM* e = BN_bin2bn(exponent.data(), static_cast<int>(exponent.size()), nullptr);
    BIGNUM* m = BN_bin2bn(block.data(), static_cast<int>(block.size()), nullptr);
    BIGNUM* c = BN_new();
    std::vector<unsigned char> out(modulus.size());
    if (ctx == nullptr || n == nullptr || e == nullptr || m == nullptr || c == nullptr ||
        BN_mod_exp(c, m, e, n, ctx) != 1 ||
        BN_bn2binpad(c, out.data(), static_cast<int>(out.size())) < 0) {
        fail("raw RSA with OpenSSL");
    }
    BN_free(c);
    BN_free(m);
    BN_free(e);
    BN_free(n);
    BN_CTX_free(ctx);
    return out;
}

std::vector<unsigned char> attribute(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE object,
                                     CK_ATTRIBUTE_TYPE type) {
    CK_ATTRIBUTE a{type, nullptr, 0};
    check(f->C_GetAttributeValue(s, object, &a, 1), "C_GetAttributeValue length");
    std::vector<unsigned char> value(a.ulValueLen);
    a.pValue = value.data();
    check(f->C_GetAttributeValue(s, object, &a, 1), "C_GetAttributeValue");
    return value;
}

int cmd_rsa_pkcs(char** argv) {
    load(argv[2]);
    init_os_locking();
    CK_SESSION_HANDLE s = 0;
    check(f->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s), "open");
    CK_ULONG bits = 2048;
    CK_BBOOL no = CK_FALSE;
    CK_BBOOL yes = CK_TRUE;
    CK_ATTRIBUTE pubt[] = {{CKA_MODULUS_BITS, &bits, sizeof bits},
                           {CKA_TOKEN, &no, sizeof no},
                           {CKA_ENCRYPT, &yes, sizeof yes}};
    CK_ATTRIBUTE privt[] = {{CKA_TOKEN, &no, sizeof no}, {CKA_DECRYPT, &yes, sizeof yes}};
    CK_MECHANISM gen{CKM_RSA_PKCS_KEY_PAIR_GEN, nullptr, 0};
    CK_OBJECT_HANDLE pub = 0;
    CK_OBJECT_HANDLE priv = 0;
    check(f->C_GenerateKeyPair(s, &gen, pubt, 3, privt, 2, &pub, &priv), "generate RSA key");
    const auto modulus = attribute(s, pub, CKA_MODULUS);
    const auto exponent = attribute(s, pub, CKA_PUBLIC_EXPONENT);
    if (modulus.size() != 256) {
        fail("the modulus is not 256 bytes");
    }
    CK_MECHANISM mech{CKM_RSA_PKCS, nullptr, 0};
    auto decrypt = [&](const std::vector<unsigned char>& ct, CK_RV want, const std::string& what) {
        check(f->C_DecryptInit(s, &mech, priv), "C_DecryptInit");
        std::vector<unsigned char> out(256);
        CK_ULONG len = out.size();
        const CK_RV rv =
            f->C_Decrypt(s, const_cast<unsigned char*>(ct.data()), ct.size(), out.data(), &len);
        check(rv, "C_Decrypt, " + what, want);
        out.resize(rv == CKR_OK ? len : 0);
        return out;
    };
    // EM = 00 02 PS(>= 8 non-zero bytes) 00 M when well formed.
    auto block = [](unsigned char first, unsigned char type, std::size_t ps, bool separator) {
        std::vector<unsigned char> em(256, 0x42);
        em[0] = first;
        em[1] = type;
        if (separator) {
            em[2 + ps] = 0;
        }
        return em;
    };
    const auto good = decrypt(raw_rsa(modulus, exponent, block(0, 2, 20, true)), CKR_OK, "good");
    if (good != std::vector<unsigned char>(256 - 23, 0x42)) {
        fail("the well-formed block did not decrypt to its message");
    }
    decrypt(raw_rsa(modulus, exponent, block(0, 1, 20, true)), CKR_ENCRYPTED_DATA_INVALID,
            "block type 1");
    decrypt(raw_rsa(modulus, exponent, block(0, 2, 0, false)), CKR_ENCRYPTED_DATA_INVALID,
            "no separator");
    decrypt(raw_rsa(modulus, exponent, block(0, 2, 5, true)), CKR_ENCRYPTED_DATA_INVALID,
            "padding too short");
    decrypt(raw_rsa(modulus, exponent, block(1, 2, 20, true)), CKR_ENCRYPTED_DATA_INVALID,
            "first byte not zero");
    decrypt(std::vector<unsigned char>(256, 0xff), CKR_ENCRYPTED_DATA_INVALID, "above the modulus");
    check(f->C_Finalize(nullptr), "C_Finalize");
    std::cout << "rsa-pkcs ok" << std::endl;
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 3) {
        std::cerr << "usage: see the comment at the top of p11_driver.cpp\n";
        return 2;
    }
    const std::string cmd = argv[1];
    if (cmd == "sign-until" && argc >= 8) {
        return cmd_sign_until(argv);
    }
    if (cmd == "sign" && argc >= 8) {
        return cmd_sign(argv);
    }
    if (cmd == "fork" && argc == 6) {
        return cmd_fork(argv);
    }
    if (cmd == "initargs") {
        return cmd_initargs(argv);
    }
    if (cmd == "attrs" && argc == 6) {
        return cmd_attrs(argv);
    }
    if (cmd == "session-key" && argc == 4) {
        return cmd_session_key(argv);
    }
    if (cmd == "gcm" && argc == 3) {
        return cmd_gcm(argv);
    }
    if (cmd == "destroy" && argc == 7) {
        return cmd_destroy(argv);
    }
    if (cmd == "null-pin" && argc == 4) {
        return cmd_null_pin(argv);
    }
    if (cmd == "interfaces" && argc == 5) {
        return cmd_interfaces(argv);
    }
    if (cmd == "rsa-pkcs" && argc == 3) {
        return cmd_rsa_pkcs(argv);
    }
    std::cerr << "bad command\n";
    return 2;
}
