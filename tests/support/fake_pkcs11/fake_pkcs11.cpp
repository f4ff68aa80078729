// A fake PKCS#11 library for end-to-end tests: one slot (0) holding one
// token with one EC P-256 key pair, whose behaviour a test drives through
// files in the directory named by the environment variable FAKE_PKCS11_DIR
// (read at C_Initialize; without it C_Initialize returns CKR_GENERAL_ERROR).
// The files are re-read on every call that needs them, so a test may change
// them while the library runs. It shows what SoftHSM2 cannot: the user PIN's
// counter flags, token removal and C_WaitForSlotEvent, fewer mechanisms.
//
// Control files (all optional except key.pem and pin, for a usable token):
//   key.pem      the token's EC P-256 private key (PEM, unencrypted, e.g.
//                `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
//                Object 1 is its private key (CKO_PRIVATE_KEY, visible only
//                while logged in), object 2 its public key (always visible).
//                Without a readable P-256 key the token holds no objects.
//   id           CKA_ID of both objects, as hex digits (other characters are
//                ignored); default 01.
//   label        CKA_LABEL of both objects; default "fake key".
//   pin          the user PIN (trailing newline stripped); without it every
//                PIN is incorrect.
//   pin_flags    words among count_low, final_try, locked: the token info
//                gets CKF_USER_PIN_COUNT_LOW / _FINAL_TRY / _LOCKED; with
//                locked, C_Login returns CKR_PIN_LOCKED.
//   absent       while it exists the token is removed: C_GetSlotList(CK_TRUE)
//                lists no slot, C_GetSlotInfo lacks CKF_TOKEN_PRESENT,
//                C_GetTokenInfo, C_GetMechanismList/Info and C_OpenSession
//                return CKR_TOKEN_NOT_PRESENT, and sessions open when the
//                library notices the removal (on any call that looks at the
//                token, or a C_WaitForSlotEvent poll) return
//                CKR_DEVICE_REMOVED; once the token is back, they return
//                CKR_SESSION_HANDLE_INVALID. The login is lost on removal.
//   mechanisms   CKM_ values, whitespace-separated, hex (0x...) or decimal;
//                without the file, CKM_ECDSA only (an empty file: none).
//                Only CKM_ECDSA can sign and verify (and only when listed);
//                others are listed, nothing more.
//   events       while it exists C_WaitForSlotEvent is supported; otherwise
//                it returns CKR_FUNCTION_NOT_SUPPORTED. The library remembers
//                the presence it last reported (at first, the presence at
//                C_Initialize); an event is a change of it (slot 0).
//                Blocking waits poll every 10 ms; C_Finalize ends them with
//                CKR_CRYPTOKI_NOT_INITIALIZED.
//   public_copies  a number N: N more public key objects (handles 3 to
//                N + 2), copies of object 2 whose CKA_ID is the key's id
//                followed by the copy's number (two bytes, big-endian) and
//                whose label is "copy K": a token with very many objects.
//   token_label  the token's label; default "fake token".
//   serial       the token's serial number; default "FAKE0001".
//   calls.log    written by the library: one line per call of C_Initialize
//                ("initialize"), C_Finalize ("finalize"), C_WaitForSlotEvent
//                ("wait_for_slot_event") and C_Login ("login ok", "login bad"
//                for a wrong PIN, "login locked", "login already" when
//                already logged in, "login invalid" for any other failure).
//
// Sessions: at most 64 open; handles count up from 1 after C_Initialize; the
// login is the token's (all sessions). CKM_ECDSA signs a digest of 1 to 64
// bytes into r||s (64 bytes). Implemented: what the member worker calls, and
// C_GetSlotInfo, C_GetMechanismInfo, C_WaitForSlotEvent; every other function
// returns CKR_FUNCTION_NOT_SUPPORTED. Only C_GetFunctionList is exported.

#include "preloadrun/pkcs11/cryptoki.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <utility>
#include <vector>

namespace {

using Bytes = std::vector<unsigned char>;
using Attrs = std::vector<std::pair<CK_ATTRIBUTE_TYPE, Bytes>>;

constexpr CK_SLOT_ID kSlot = 0;
constexpr CK_OBJECT_HANDLE kPrivate = 1;
constexpr CK_OBJECT_HANDLE kPublic = 2;
constexpr std::size_t kMaxSessions = 64;
constexpr CK_ULONG kSignatureLen = 64;
constexpr CK_ULONG kMaxDigest = 64;
// DER of the OID of prime256v1 (1.2.840.10045.3.1.7).
const Bytes kP256Params = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};

enum class Op { none, find, sign, verify };

struct Session {
    CK_FLAGS flags = 0;
    Op op = Op::none;
    std::vector<CK_OBJECT_HANDLE> found; // objects C_FindObjects has yet to return
};

// Everything, under `mutex`.
struct State {
    std::mutex mutex;
    std::condition_variable cv; // C_Finalize <-> blocked C_WaitForSlotEvent
    bool initialized = false;
    unsigned long generation = 0; // counts C_Finalize calls
    int waiters = 0;              // threads inside C_WaitForSlotEvent
    std::string dir;
    bool reported_present = true;
    bool logged_in = false;
    CK_SESSION_HANDLE next_handle = 1;
    std::map<CK_SESSION_HANDLE, Session> sessions; // open on the present token
    std::set<CK_SESSION_HANDLE> removed;           // open when it was removed
};

State g;

// ---- Control files -------------------------------------------------------

std::string path_of(const char* name) {
    return g.dir + "/" + name;
}

bool exists(const char* name) {
    struct stat st {};
    return ::stat(path_of(name).c_str(), &st) == 0;
}

std::optional<std::string> read_file(const char* name) {
    std::ifstream in(path_of(name), std::ios::binary);
    if (!in) {
        return std::nullopt;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

// The file's text without its trailing newline, or `fallback` without it.
std::string text_of(const char* name, const char* fallback) {
    auto text = read_file(name);
    if (!text) {
        return fallback;
    }
    while (!text->empty() && (text->back() == '\n' || text->back() == '\r')) {
        text->pop_back();
    }
    return *text;
}

std::vector<std::string> words_of(const char* name) {
    std::istringstream in(read_file(name).value_or(""));
    std::vector<std::string> words;
    for (std::string word; in >> word;) {
        words.push_back(word);
    }
    return words;
}

void log_call(const char* line) {
    if (std::FILE* log = std::fopen(path_of("calls.log").c_str(), "a")) {
        std::fprintf(log, "%s\n", line);
        std::fclose(log);
    }
}

// CKA_ID: the hex digits of `id`, other characters ignored.
Bytes key_id() {
    std::string hex;
    for (char c : text_of("id", "01")) {
        if (std::isxdigit(static_cast<unsigned char>(c)) != 0) {
            hex += c;
        }
    }
    Bytes id;
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2) {
        id.push_back(static_cast<unsigned char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
    }
    return id;
}

CK_FLAGS pin_flags() {
    CK_FLAGS flags = 0;
    for (const auto& word : words_of("pin_flags")) {
        if (word == "count_low") {
            flags |= CKF_USER_PIN_COUNT_LOW;
        } else if (word == "final_try") {
            flags |= CKF_USER_PIN_FINAL_TRY;
        } else if (word == "locked") {
            flags |= CKF_USER_PIN_LOCKED;
        }
    }
    return flags;
}

std::vector<CK_MECHANISM_TYPE> mechanisms() {
    if (!exists("mechanisms")) {
        return {CKM_ECDSA};
    }
    std::vector<CK_MECHANISM_TYPE> list;
    for (const auto& word : words_of("mechanisms")) {
        const bool hex = word.rfind("0x", 0) == 0 || word.rfind("0X", 0) == 0;
        try {
            std::size_t used = 0;
            const unsigned long value = std::stoul(word, &used, hex ? 16 : 10);
            if (used == word.size()) {
                list.push_back(value);
            }
        } catch (const std::exception&) {
            // not a number: ignored
        }
    }
    return list;
}

bool offered(CK_MECHANISM_TYPE type) {
    const auto list = mechanisms();
    return std::find(list.begin(), list.end(), type) != list.end();
}

// Whether the token is present; noticing its removal ends its sessions and
// the login, and once it is back the ended sessions are forgotten.
bool present() {
    if (exists("absent")) {
        for (const auto& entry : g.sessions) {
            g.removed.insert(entry.first);
        }
        g.sessions.clear();
        g.logged_in = false;
        return false;
    }
    g.removed.clear();
    return true;
}

// ---- The key -------------------------------------------------------------

using Pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using PkeyCtx = std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)>;
using EcdsaSig = std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)>;

int no_passphrase(char*, int, int, void*) {
    return 0;
}

// key.pem's P-256 key, or null.
Pkey parse_key(const std::optional<std::string>& pem);

// The key of key.pem, parsed again only when the file's text changed (a
// token of many objects asks for it at every attribute).
Pkey load_key() {
    static std::mutex cache_mutex;
    static std::optional<std::string> cached_pem;
    static EVP_PKEY* cached = nullptr;
    const auto pem = read_file("key.pem");
    std::lock_guard lock(cache_mutex);
    if (!(pem == cached_pem)) {
        EVP_PKEY_free(cached);
        cached = parse_key(pem).release();
        cached_pem = pem;
    }
    if (cached != nullptr) {
        EVP_PKEY_up_ref(cached);
    }
    return Pkey(cached, EVP_PKEY_free);
}

Pkey parse_key(const std::optional<std::string>& pem) {
    Pkey key(nullptr, EVP_PKEY_free);
    if (pem) {
        BIO* bio = BIO_new_mem_buf(pem->data(), static_cast<int>(pem->size()));
        if (bio != nullptr) {
            key.reset(PEM_read_bio_PrivateKey(bio, nullptr, no_passphrase, nullptr));
            BIO_free(bio);
        }
    }
    char group[64] = {};
    std::size_t length = 0;
    if (key && (!EVP_PKEY_is_a(key.get(), "EC") ||
                EVP_PKEY_get_utf8_string_param(key.get(), OSSL_PKEY_PARAM_GROUP_NAME, group,
                                               sizeof group, &length) != 1 ||
                std::strcmp(group, "prime256v1") != 0)) {
        key.reset();
    }
    ERR_clear_error(); // leave no error behind for the caller's OpenSSL
    return key;
}

// CKA_EC_POINT: the uncompressed point in a DER OCTET STRING.
Bytes ec_point(EVP_PKEY* key) {
    unsigned char point[65] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                        sizeof point, &length) != 1 ||
        length != sizeof point || point[0] != 0x04) {
        ERR_clear_error();
        return {};
    }
    Bytes der = {0x04, static_cast<unsigned char>(length)};
    der.insert(der.end(), point, point + length);
    return der;
}

CK_RV sign_digest(EVP_PKEY* key, const unsigned char* digest, std::size_t length,
                  unsigned char* out) {
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr), EVP_PKEY_CTX_free);
    std::size_t der_length = 0;
    CK_RV rv = CKR_FUNCTION_FAILED;
    if (ctx && EVP_PKEY_sign_init(ctx.get()) == 1 &&
        EVP_PKEY_sign(ctx.get(), nullptr, &der_length, digest, length) == 1) {
        Bytes der(der_length);
        const unsigned char* p = der.data();
        if (EVP_PKEY_sign(ctx.get(), der.data(), &der_length, digest, length) == 1) {
            EcdsaSig sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der_length)), ECDSA_SIG_free);
            const BIGNUM* r = nullptr;
            const BIGNUM* s = nullptr;
            if (sig) {
                ECDSA_SIG_get0(sig.get(), &r, &s);
                if (BN_bn2binpad(r, out, 32) == 32 && BN_bn2binpad(s, out + 32, 32) == 32) {
                    rv = CKR_OK;
                }
            }
        }
    }
    ERR_clear_error();
    return rv;
}

CK_RV verify_digest(EVP_PKEY* key, const unsigned char* digest, std::size_t length,
                    const unsigned char* signature) {
    EcdsaSig sig(ECDSA_SIG_new(), ECDSA_SIG_free);
    BIGNUM* r = BN_bin2bn(signature, 32, nullptr);
    BIGNUM* s = BN_bin2bn(signature + 32, 32, nullptr);
    if (!sig || r == nullptr || s == nullptr || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
        BN_free(r);
        BN_free(s);
        return CKR_HOST_MEMORY;
    }
    unsigned char* der = nullptr;
    const int der_length = i2d_ECDSA_SIG(sig.get(), &der);
    PkeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr), EVP_PKEY_CTX_free);
    const bool good =
        der_length > 0 && ctx && EVP_PKEY_verify_init(ctx.get()) == 1 &&
        EVP_PKEY_verify(ctx.get(), der, static_cast<std::size_t>(der_length), digest, length) == 1;
    OPENSSL_free(der);
    ERR_clear_error();
    return good ? CKR_OK : CKR_SIGNATURE_INVALID;
}

// ---- Objects -------------------------------------------------------------

Bytes ulong_value(CK_ULONG value) {
    Bytes bytes(sizeof value);
    std::memcpy(bytes.data(), &value, sizeof value);
    return bytes;
}

Bytes bool_value(bool value) {
    return {static_cast<unsigned char>(value ? CK_TRUE : CK_FALSE)};
}

Bytes text_value(const std::string& text) {
    return Bytes(text.begin(), text.end());
}

// How many copies of the public key the token shows (public_copies).
CK_OBJECT_HANDLE public_copies() {
    return static_cast<CK_OBJECT_HANDLE>(
        std::min(std::strtoul(text_of("public_copies", "0").c_str(), nullptr, 10), 100000UL));
}

// Every object handle of the token (visible or not).
std::vector<CK_OBJECT_HANDLE> all_objects() {
    std::vector<CK_OBJECT_HANDLE> handles{kPrivate, kPublic};
    const auto copies = public_copies();
    for (CK_OBJECT_HANDLE h = 0; h < copies; ++h) {
        handles.push_back(kPublic + 1 + h);
    }
    return handles;
}

// The attributes of the object `handle` names, when it is visible now.
std::optional<Attrs> object(CK_OBJECT_HANDLE handle) {
    const bool copy = handle > kPublic && handle <= kPublic + public_copies();
    if ((handle != kPrivate && handle != kPublic && !copy) ||
        (handle == kPrivate && !g.logged_in)) {
        return std::nullopt;
    }
    const Pkey key = load_key();
    if (!key) {
        return std::nullopt;
    }
    const bool priv = handle == kPrivate;
    Bytes id = key_id();
    std::string label = text_of("label", "fake key");
    if (copy) {
        const auto number = handle - kPublic;
        id.push_back(static_cast<unsigned char>((number >> 8) & 0xff));
        id.push_back(static_cast<unsigned char>(number & 0xff));
        label = "copy " + std::to_string(number);
    }
    Attrs attrs = {
        {CKA_CLASS, ulong_value(priv ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY)},
        {CKA_KEY_TYPE, ulong_value(CKK_EC)},
        {CKA_TOKEN, bool_value(true)},
        {CKA_PRIVATE, bool_value(priv)},
        {CKA_MODIFIABLE, bool_value(false)},
        {CKA_LOCAL, bool_value(true)},
        {CKA_ID, id},
        {CKA_LABEL, text_value(label)},
        {CKA_EC_PARAMS, kP256Params},
        {CKA_DERIVE, bool_value(false)},
    };
    if (priv) {
        for (auto type : {CKA_SIGN, CKA_SENSITIVE, CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE}) {
            attrs.emplace_back(type, bool_value(true));
        }
        for (auto type : {CKA_EXTRACTABLE, CKA_DECRYPT, CKA_SIGN_RECOVER, CKA_UNWRAP,
                          CKA_ALWAYS_AUTHENTICATE}) {
            attrs.emplace_back(type, bool_value(false));
        }
    } else {
        attrs.emplace_back(CKA_VERIFY, bool_value(true));
        for (auto type : {CKA_ENCRYPT, CKA_VERIFY_RECOVER, CKA_WRAP}) {
            attrs.emplace_back(type, bool_value(false));
        }
        attrs.emplace_back(CKA_EC_POINT, ec_point(key.get()));
    }
    return attrs;
}

const Bytes* attribute(const Attrs& attrs, CK_ATTRIBUTE_TYPE type) {
    for (const auto& [held, value] : attrs) {
        if (held == type) {
            return &value;
        }
    }
    return nullptr;
}

// ---- Entry points --------------------------------------------------------

template <std::size_t N> void pad(unsigned char (&field)[N], const std::string& text) {
    std::memset(field, ' ', N);
    std::memcpy(field, text.data(), std::min(N, text.size()));
}

// The open session `handle` names, or why there is none.
CK_RV lookup(CK_SESSION_HANDLE handle, Session*& session) {
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (!present()) {
        return g.removed.count(handle) != 0 ? CKR_DEVICE_REMOVED : CKR_SESSION_HANDLE_INVALID;
    }
    auto it = g.sessions.find(handle);
    if (it == g.sessions.end()) {
        return CKR_SESSION_HANDLE_INVALID;
    }
    session = &it->second;
    return CKR_OK;
}

// The checks of the calls on slot 0 that need the token.
CK_RV token_check(CK_SLOT_ID slot) {
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (slot != kSlot) {
        return CKR_SLOT_ID_INVALID;
    }
    return present() ? CKR_OK : CKR_TOKEN_NOT_PRESENT;
}

CK_RV Initialize(CK_VOID_PTR init_args) noexcept {
    std::lock_guard lock(g.mutex);
    if (g.initialized) {
        return CKR_CRYPTOKI_ALREADY_INITIALIZED;
    }
    if (init_args != nullptr) {
        const auto* args = static_cast<const CK_C_INITIALIZE_ARGS*>(init_args);
        const int given = (args->CreateMutex != nullptr) + (args->DestroyMutex != nullptr) +
                          (args->LockMutex != nullptr) + (args->UnlockMutex != nullptr);
        if (args->pReserved != nullptr || (given != 0 && given != 4)) {
            return CKR_ARGUMENTS_BAD;
        }
    }
    const char* dir = std::getenv("FAKE_PKCS11_DIR");
    if (dir == nullptr || *dir == '\0') {
        return CKR_GENERAL_ERROR;
    }
    g.dir = dir;
    g.initialized = true;
    g.logged_in = false;
    g.next_handle = 1;
    g.sessions.clear();
    g.removed.clear();
    log_call("initialize");
    g.reported_present = present();
    return CKR_OK;
}

CK_RV Finalize(CK_VOID_PTR reserved) noexcept {
    if (reserved != nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    std::unique_lock lock(g.mutex);
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    log_call("finalize");
    g.initialized = false;
    ++g.generation;
    g.logged_in = false;
    g.sessions.clear();
    g.removed.clear();
    g.cv.notify_all();
    g.cv.wait(lock, [] { return g.waiters == 0; }); // the blocked waits return first
    return CKR_OK;
}

CK_RV GetInfo(CK_INFO_PTR info) noexcept {
    std::lock_guard lock(g.mutex);
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (info == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    std::memset(info, 0, sizeof *info);
    info->cryptokiVersion = {2, 40};
    pad(info->manufacturerID, "preloadrun tests");
    pad(info->libraryDescription, "fake PKCS#11 token");
    info->libraryVersion = {1, 0};
    return CKR_OK;
}

CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) noexcept;

CK_RV GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count) noexcept {
    std::lock_guard lock(g.mutex);
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (count == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    const CK_ULONG slots = (token_present != CK_FALSE && !present()) ? 0 : 1;
    if (list != nullptr) {
        if (*count < slots) {
            *count = slots;
            return CKR_BUFFER_TOO_SMALL;
        }
        if (slots == 1) {
            list[0] = kSlot;
        }
    }
    *count = slots;
    return CKR_OK;
}

CK_RV GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info) noexcept {
    std::lock_guard lock(g.mutex);
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if (slot != kSlot) {
        return CKR_SLOT_ID_INVALID;
    }
    if (info == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    std::memset(info, 0, sizeof *info);
    pad(info->slotDescription, "fake slot");
    pad(info->manufacturerID, "preloadrun tests");
    info->flags = CKF_REMOVABLE_DEVICE | (present() ? CKF_TOKEN_PRESENT : 0);
    info->hardwareVersion = {1, 0};
    info->firmwareVersion = {1, 0};
    return CKR_OK;
}

CK_RV GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) noexcept {
    std::lock_guard lock(g.mutex);
    if (CK_RV rv = token_check(slot); rv != CKR_OK) {
        return rv;
    }
    if (info == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    std::memset(info, 0, sizeof *info);
    pad(info->label, text_of("token_label", "fake token"));
    pad(info->manufacturerID, "preloadrun tests");
    pad(info->model, "fake");
    pad(info->serialNumber, text_of("serial", "FAKE0001"));
    info->flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_LOGIN_REQUIRED | CKF_RNG |
                  pin_flags();
    info->ulMaxSessionCount = kMaxSessions;
    info->ulSessionCount = g.sessions.size();
    info->ulMaxRwSessionCount = kMaxSessions;
    info->ulRwSessionCount = static_cast<CK_ULONG>(
        std::count_if(g.sessions.begin(), g.sessions.end(), [](const auto& entry) {
            return (entry.second.flags & CKF_RW_SESSION) != 0;
        }));
    info->ulMaxPinLen = 64;
    info->ulMinPinLen = 4;
    info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->hardwareVersion = {1, 0};
    info->firmwareVersion = {1, 0};
    pad(info->utcTime, "");
    return CKR_OK;
}

CK_RV GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count) noexcept {
    std::lock_guard lock(g.mutex);
    if (CK_RV rv = token_check(slot); rv != CKR_OK) {
        return rv;
    }
    if (count == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    const auto types = mechanisms();
    if (list != nullptr) {
        if (*count < types.size()) {
            *count = types.size();
            return CKR_BUFFER_TOO_SMALL;
        }
        std::copy(types.begin(), types.end(), list);
    }
    *count = types.size();
    return CKR_OK;
}

CK_RV GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type,
                       CK_MECHANISM_INFO_PTR info) noexcept {
    std::lock_guard lock(g.mutex);
    if (CK_RV rv = token_check(slot); rv != CKR_OK) {
        return rv;
    }
    if (info == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    if (!offered(type)) {
        return CKR_MECHANISM_INVALID;
    }
    info->ulMinKeySize = 256;
    info->ulMaxKeySize = 256;
    info->flags = CKF_HW | (type == CKM_ECDSA ? CKF_SIGN | CKF_VERIFY : 0);
    return CKR_OK;
}

CK_RV OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR, CK_NOTIFY,
                  CK_SESSION_HANDLE_PTR handle) noexcept {
    std::lock_guard lock(g.mutex);
    if (CK_RV rv = token_check(slot); rv != CKR_OK) {
        return rv;
    }
    if (handle == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    if ((flags & CKF_SERIAL_SESSION) == 0) {
        return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
    }
    if (g.sessions.size() >= kMaxSessions) {
        return CKR_SESSION_COUNT;
    }
    *handle = g.next_handle++;
    g.sessions[*handle].flags = flags;
    return CKR_OK;
}

// Runs `body` on the open session `handle` names, under the lock.
template <typename Body> CK_RV on_session(CK_SESSION_HANDLE handle, Body body) {
    std::lock_guard lock(g.mutex);
    Session* session = nullptr;
    const CK_RV rv = lookup(handle, session);
    return rv == CKR_OK ? body(*session) : rv;
}

CK_RV CloseSession(CK_SESSION_HANDLE handle) noexcept {
    return on_session(handle, [&](Session&) {
        g.sessions.erase(handle);
        if (g.sessions.empty()) {
            g.logged_in = false; // the last session takes the login with it
        }
        return CKR_OK;
    });
}

CK_RV GetSessionInfo(CK_SESSION_HANDLE handle, CK_SESSION_INFO_PTR info) noexcept {
    return on_session(handle, [&](Session& session) {
        if (info == nullptr) {
            return CKR_ARGUMENTS_BAD;
        }
        const bool rw = (session.flags & CKF_RW_SESSION) != 0;
        info->slotID = kSlot;
        info->state = g.logged_in ? (rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS)
                                  : (rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION);
        info->flags = session.flags;
        info->ulDeviceError = 0;
        return CKR_OK;
    });
}

CK_RV try_login(CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG length) {
    if (user != CKU_USER) {
        return CKR_USER_TYPE_INVALID;
    }
    if (pin == nullptr && length > 0) {
        return CKR_ARGUMENTS_BAD;
    }
    if ((pin_flags() & CKF_USER_PIN_LOCKED) != 0) {
        return CKR_PIN_LOCKED;
    }
    if (g.logged_in) {
        return CKR_USER_ALREADY_LOGGED_IN;
    }
    const std::string given =
        length == 0 ? std::string() : std::string(reinterpret_cast<const char*>(pin), length);
    if (!exists("pin") || text_of("pin", "") != given) {
        return CKR_PIN_INCORRECT;
    }
    g.logged_in = true;
    return CKR_OK;
}

CK_RV Login(CK_SESSION_HANDLE handle, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin,
            CK_ULONG length) noexcept {
    const CK_RV rv = on_session(handle, [&](Session&) { return try_login(user, pin, length); });
    if (rv != CKR_CRYPTOKI_NOT_INITIALIZED) {
        std::lock_guard lock(g.mutex);
        log_call(rv == CKR_OK                       ? "login ok"
                 : rv == CKR_PIN_INCORRECT          ? "login bad"
                 : rv == CKR_PIN_LOCKED             ? "login locked"
                 : rv == CKR_USER_ALREADY_LOGGED_IN ? "login already"
                                                    : "login invalid");
    }
    return rv;
}

CK_RV Logout(CK_SESSION_HANDLE handle) noexcept {
    return on_session(handle, [](Session&) {
        const bool was = std::exchange(g.logged_in, false);
        return was ? CKR_OK : CKR_USER_NOT_LOGGED_IN;
    });
}

CK_RV GetAttributeValue(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE object_handle,
                        CK_ATTRIBUTE_PTR templ, CK_ULONG count) noexcept {
    return on_session(handle, [&](Session&) {
        if (templ == nullptr && count > 0) {
            return CKR_ARGUMENTS_BAD;
        }
        const auto attrs = object(object_handle);
        if (!attrs) {
            return CKR_OBJECT_HANDLE_INVALID;
        }
        CK_RV rv = CKR_OK;
        for (CK_ULONG i = 0; i < count; ++i) {
            CK_ATTRIBUTE& a = templ[i];
            const Bytes* value = attribute(*attrs, a.type);
            if (object_handle == kPrivate && a.type == CKA_VALUE) {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_ATTRIBUTE_SENSITIVE;
            } else if (value == nullptr) {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_ATTRIBUTE_TYPE_INVALID;
            } else if (a.pValue == nullptr) {
                a.ulValueLen = value->size();
            } else if (a.ulValueLen < value->size()) {
                a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_BUFFER_TOO_SMALL;
            } else {
                std::memcpy(a.pValue, value->data(), value->size());
                a.ulValueLen = value->size();
            }
        }
        return rv;
    });
}

bool matches(const Attrs& attrs, const CK_ATTRIBUTE& want) {
    const Bytes* value = attribute(attrs, want.type);
    const auto* bytes = static_cast<const unsigned char*>(want.pValue);
    return value != nullptr && value->size() == want.ulValueLen &&
           (value->empty() ||
            (bytes != nullptr && std::equal(value->begin(), value->end(), bytes)));
}

CK_RV FindObjectsInit(CK_SESSION_HANDLE handle, CK_ATTRIBUTE_PTR templ, CK_ULONG count) noexcept {
    return on_session(handle, [&](Session& session) {
        if (templ == nullptr && count > 0) {
            return CKR_ARGUMENTS_BAD;
        }
        if (session.op != Op::none) {
            return CKR_OPERATION_ACTIVE;
        }
        session.found.clear();
        for (CK_OBJECT_HANDLE candidate : all_objects()) {
            const auto attrs = object(candidate);
            if (attrs && std::all_of(templ, templ + count, [&](const CK_ATTRIBUTE& want) {
                    return matches(*attrs, want);
                })) {
                session.found.push_back(candidate);
            }
        }
        session.op = Op::find;
        return CKR_OK;
    });
}

CK_RV FindObjects(CK_SESSION_HANDLE handle, CK_OBJECT_HANDLE_PTR objects, CK_ULONG max,
                  CK_ULONG_PTR count) noexcept {
    return on_session(handle, [&](Session& session) {
        if (objects == nullptr || count == nullptr) {
            return CKR_ARGUMENTS_BAD;
        }
        if (session.op != Op::find) {
            return CKR_OPERATION_NOT_INITIALIZED;
        }
        const auto n = std::min<std::size_t>(max, session.found.size());
        std::copy_n(session.found.begin(), n, objects);
        session.found.erase(session.found.begin(), session.found.begin() + static_cast<long>(n));
        *count = n;
        return CKR_OK;
    });
}

CK_RV FindObjectsFinal(CK_SESSION_HANDLE handle) noexcept {
    return on_session(handle, [](Session& session) {
        if (session.op != Op::find) {
            return CKR_OPERATION_NOT_INITIALIZED;
        }
        session.op = Op::none;
        session.found.clear();
        return CKR_OK;
    });
}

// C_SignInit and C_VerifyInit: CKM_ECDSA with the private, resp. public, key.
CK_RV start(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism, CK_OBJECT_HANDLE key, Op op) {
    return on_session(handle, [&](Session& session) {
        if (mechanism == nullptr) {
            return CKR_ARGUMENTS_BAD;
        }
        if (session.op != Op::none) {
            return CKR_OPERATION_ACTIVE;
        }
        if (mechanism->mechanism != CKM_ECDSA || !offered(CKM_ECDSA)) {
            return CKR_MECHANISM_INVALID;
        }
        if (mechanism->pParameter != nullptr || mechanism->ulParameterLen != 0) {
            return CKR_MECHANISM_PARAM_INVALID;
        }
        if (key == kPrivate && !g.logged_in) {
            return CKR_USER_NOT_LOGGED_IN;
        }
        if (!object(key)) {
            return CKR_KEY_HANDLE_INVALID;
        }
        if (key != (op == Op::sign ? kPrivate : kPublic)) {
            return CKR_KEY_FUNCTION_NOT_PERMITTED;
        }
        session.op = op;
        return CKR_OK;
    });
}

CK_RV SignInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism,
               CK_OBJECT_HANDLE key) noexcept {
    return start(handle, mechanism, key, Op::sign);
}

CK_RV VerifyInit(CK_SESSION_HANDLE handle, CK_MECHANISM_PTR mechanism,
                 CK_OBJECT_HANDLE key) noexcept {
    return start(handle, mechanism, key, Op::verify);
}

CK_RV Sign(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG length, CK_BYTE_PTR signature,
           CK_ULONG_PTR signature_length) noexcept {
    return on_session(handle, [&](Session& session) {
        if (session.op != Op::sign) {
            return CKR_OPERATION_NOT_INITIALIZED;
        }
        if (signature_length == nullptr || (data == nullptr && length > 0)) {
            session.op = Op::none;
            return CKR_ARGUMENTS_BAD;
        }
        if (length == 0 || length > kMaxDigest) {
            session.op = Op::none;
            return CKR_DATA_LEN_RANGE;
        }
        if (signature == nullptr) {
            *signature_length = kSignatureLen; // a size query: the operation goes on
            return CKR_OK;
        }
        if (*signature_length < kSignatureLen) {
            *signature_length = kSignatureLen;
            return CKR_BUFFER_TOO_SMALL;
        }
        session.op = Op::none;
        if (!g.logged_in) {
            return CKR_USER_NOT_LOGGED_IN;
        }
        const Pkey key = load_key();
        const CK_RV rv =
            key ? sign_digest(key.get(), data, length, signature) : CKR_KEY_HANDLE_INVALID;
        if (rv == CKR_OK) {
            *signature_length = kSignatureLen;
        }
        return rv;
    });
}

CK_RV Verify(CK_SESSION_HANDLE handle, CK_BYTE_PTR data, CK_ULONG length, CK_BYTE_PTR signature,
             CK_ULONG signature_length) noexcept {
    return on_session(handle, [&](Session& session) {
        if (session.op != Op::verify) {
            return CKR_OPERATION_NOT_INITIALIZED;
        }
        session.op = Op::none;
        if ((data == nullptr && length > 0) || (signature == nullptr && signature_length > 0)) {
            return CKR_ARGUMENTS_BAD;
        }
        if (length == 0 || length > kMaxDigest) {
            return CKR_DATA_LEN_RANGE;
        }
        if (signature_length != kSignatureLen) {
            return CKR_SIGNATURE_LEN_RANGE;
        }
        const Pkey key = load_key();
        return key ? verify_digest(key.get(), data, length, signature) : CKR_KEY_HANDLE_INVALID;
    });
}

CK_RV GenerateRandom(CK_SESSION_HANDLE handle, CK_BYTE_PTR out, CK_ULONG length) noexcept {
    return on_session(handle, [&](Session&) {
        if (out == nullptr && length > 0) {
            return CKR_ARGUMENTS_BAD;
        }
        for (CK_ULONG done = 0; done < length;) {
            const int chunk = static_cast<int>(std::min<CK_ULONG>(length - done, 1 << 20));
            if (RAND_bytes(out + done, chunk) != 1) {
                ERR_clear_error();
                return CKR_FUNCTION_FAILED;
            }
            done += static_cast<CK_ULONG>(chunk);
        }
        return CKR_OK;
    });
}

CK_RV WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved) noexcept {
    std::unique_lock lock(g.mutex);
    if (!g.initialized) {
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    log_call("wait_for_slot_event");
    if (!exists("events")) {
        return CKR_FUNCTION_NOT_SUPPORTED;
    }
    if (slot == nullptr || reserved != nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    const unsigned long generation = g.generation;
    ++g.waiters;
    CK_RV rv = CKR_NO_EVENT;
    for (;;) {
        if (!g.initialized || g.generation != generation) {
            rv = CKR_CRYPTOKI_NOT_INITIALIZED;
            break;
        }
        if (const bool now = present(); now != g.reported_present) {
            g.reported_present = now;
            *slot = kSlot;
            rv = CKR_OK;
            break;
        }
        if ((flags & CKF_DONT_BLOCK) != 0) {
            break;
        }
        g.cv.wait_for(lock, std::chrono::milliseconds(10));
    }
    --g.waiters;
    g.cv.notify_all(); // a C_Finalize may wait for this
    return rv;
}

// Every function the member worker does not call.
template <typename F> struct Unsupported;
template <typename... Args> struct Unsupported<CK_RV (*)(Args...)> {
    static CK_RV call(Args...) noexcept { return CKR_FUNCTION_NOT_SUPPORTED; }
};
#define FAKE_UNSUPPORTED(name) Unsupported<CK_C_##name>::call

CK_FUNCTION_LIST function_list = {
    {2, 40},
    Initialize,
    Finalize,
    GetInfo,
    GetFunctionList,
    GetSlotList,
    GetSlotInfo,
    GetTokenInfo,
    GetMechanismList,
    GetMechanismInfo,
    FAKE_UNSUPPORTED(InitToken),
    FAKE_UNSUPPORTED(InitPIN),
    FAKE_UNSUPPORTED(SetPIN),
    OpenSession,
    CloseSession,
    FAKE_UNSUPPORTED(CloseAllSessions),
    GetSessionInfo,
    FAKE_UNSUPPORTED(GetOperationState),
    FAKE_UNSUPPORTED(SetOperationState),
    Login,
    Logout,
    FAKE_UNSUPPORTED(CreateObject),
    FAKE_UNSUPPORTED(CopyObject),
    FAKE_UNSUPPORTED(DestroyObject),
    FAKE_UNSUPPORTED(GetObjectSize),
    GetAttributeValue,
    FAKE_UNSUPPORTED(SetAttributeValue),
    FindObjectsInit,
    FindObjects,
    FindObjectsFinal,
    FAKE_UNSUPPORTED(EncryptInit),
    FAKE_UNSUPPORTED(Encrypt),
    FAKE_UNSUPPORTED(EncryptUpdate),
    FAKE_UNSUPPORTED(EncryptFinal),
    FAKE_UNSUPPORTED(DecryptInit),
    FAKE_UNSUPPORTED(Decrypt),
    FAKE_UNSUPPORTED(DecryptUpdate),
    FAKE_UNSUPPORTED(DecryptFinal),
    FAKE_UNSUPPORTED(DigestInit),
    FAKE_UNSUPPORTED(Digest),
    FAKE_UNSUPPORTED(DigestUpdate),
    FAKE_UNSUPPORTED(DigestKey),
    FAKE_UNSUPPORTED(DigestFinal),
    SignInit,
    Sign,
    FAKE_UNSUPPORTED(SignUpdate),
    FAKE_UNSUPPORTED(SignFinal),
    FAKE_UNSUPPORTED(SignRecoverInit),
    FAKE_UNSUPPORTED(SignRecover),
    VerifyInit,
    Verify,
    FAKE_UNSUPPORTED(VerifyUpdate),
    FAKE_UNSUPPORTED(VerifyFinal),
    FAKE_UNSUPPORTED(VerifyRecoverInit),
    FAKE_UNSUPPORTED(VerifyRecover),
    FAKE_UNSUPPORTED(DigestEncryptUpdate),
    FAKE_UNSUPPORTED(DecryptDigestUpdate),
    FAKE_UNSUPPORTED(SignEncryptUpdate),
    FAKE_UNSUPPORTED(DecryptVerifyUpdate),
    FAKE_UNSUPPORTED(GenerateKey),
    FAKE_UNSUPPORTED(GenerateKeyPair),
    FAKE_UNSUPPORTED(WrapKey),
    FAKE_UNSUPPORTED(UnwrapKey),
    FAKE_UNSUPPORTED(DeriveKey),
    FAKE_UNSUPPORTED(SeedRandom),
    GenerateRandom,
    FAKE_UNSUPPORTED(GetFunctionStatus),
    FAKE_UNSUPPORTED(CancelFunction),
    WaitForSlotEvent,
};

CK_RV GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) noexcept {
    if (list == nullptr) {
        return CKR_ARGUMENTS_BAD;
    }
    *list = &function_list;
    return CKR_OK;
}

} // namespace

extern "C" __attribute__((visibility("default"))) CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
    return GetFunctionList(list);
}
