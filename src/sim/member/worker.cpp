// The worker side of a member (worker.hpp): one thread per channel, each with
// a PKCS#11 session of its own; channel 0 first initialises the library.

#include "member/worker.hpp"

#include "member/mechanism.hpp"
#include "member/public_key.hpp"
#include "preloadrun/common/dumpable.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/hsm/types.hpp"
#include "wire/codec.hpp"
#include "wire/socket_io.hpp"
#include "worker.pb.h"

#include <algorithm>
#include <condition_variable>
#include <csignal>
#include <cstring>
#include <dlfcn.h>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace preloadrun::sim::member {

namespace {

constexpr auto kForever = std::chrono::hours(24 * 365);

// A failed call: the Reply's rv, function and message.
struct Failure {
    CK_RV rv = CKR_OK;
    std::string function;
    std::string message;
};

void check(CK_RV rv, const char* function) {
    if (rv != CKR_OK) {
        throw Failure{rv, function, {}};
    }
}

std::string padded(const unsigned char* text, std::size_t size) {
    std::string s(reinterpret_cast<const char*>(text), size);
    s.erase(s.find_last_not_of(' ') + 1);
    return s;
}

// The library, shared by every channel once channel 0 has initialised it.
struct Library {
    void* handle = nullptr;
    CK_FUNCTION_LIST* f = nullptr;
    CK_SLOT_ID slot = 0;
    std::mutex mutex;
    std::condition_variable ready_cv;
    bool ready = false;
};

bool matches(const worker::TokenSelector& want, CK_SLOT_ID slot, const CK_TOKEN_INFO& info) {
    if (!want.label().empty()) {
        return padded(info.label, sizeof info.label) == want.label();
    }
    if (!want.serial().empty()) {
        return padded(info.serialNumber, sizeof info.serialNumber) == want.serial();
    }
    return want.has_slot() && want.slot() == slot;
}

std::string describe(const worker::TokenSelector& want) {
    if (!want.label().empty()) {
        return "label \"" + want.label() + "\"";
    }
    if (!want.serial().empty()) {
        return "serial \"" + want.serial() + "\"";
    }
    return "slot " + std::to_string(want.slot());
}

void find_token(Library& lib, const worker::TokenSelector& want, worker::InitReply& out) {
    CK_ULONG count = 0;
    check(lib.f->C_GetSlotList(CK_TRUE, nullptr, &count), "C_GetSlotList");
    std::vector<CK_SLOT_ID> slots(count);
    check(lib.f->C_GetSlotList(CK_TRUE, slots.data(), &count), "C_GetSlotList");
    slots.resize(count);
    std::string seen;
    for (auto slot : slots) {
        CK_TOKEN_INFO info{};
        if (lib.f->C_GetTokenInfo(slot, &info) != CKR_OK) {
            continue;
        }
        seen += (seen.empty() ? "" : ", ") + ("\"" + padded(info.label, sizeof info.label) + "\"");
        if (matches(want, slot, info)) {
            lib.slot = slot;
            out.set_slot(slot);
            out.set_label(padded(info.label, sizeof info.label));
            out.set_serial(padded(info.serialNumber, sizeof info.serialNumber));
            out.set_manufacturer(padded(info.manufacturerID, sizeof info.manufacturerID));
            out.set_model(padded(info.model, sizeof info.model));
            return;
        }
    }
    throw Failure{CKR_TOKEN_NOT_PRESENT, "C_GetTokenInfo",
                  "no token with " + describe(want) +
                      " (tokens present: " + (seen.empty() ? "none" : seen) + ")"};
}

// Whether the library reports slot events: a C_WaitForSlotEvent that does
// not block tells without waiting (CKR_NO_EVENT, or an event it then drops).
bool reports_slot_events(Library& lib) {
    CK_SLOT_ID slot = 0;
    const CK_RV rv = lib.f->C_WaitForSlotEvent(CKF_DONT_BLOCK, &slot, nullptr);
    return rv == CKR_OK || rv == CKR_NO_EVENT;
}

// Returns the message of a token not found when `init` asks to watch for it
// (out.token_absent set); empty when the token was found.
std::string initialise(Library& lib, const worker::Init& init, worker::InitReply& out) {
    lib.handle = ::dlopen(init.library().c_str(), RTLD_NOW | RTLD_LOCAL);
    if (lib.handle == nullptr) {
        const char* why = ::dlerror();
        throw Failure{CKR_OK, "dlopen", why != nullptr ? why : init.library()};
    }
    auto* get_list =
        reinterpret_cast<CK_C_GetFunctionList>(::dlsym(lib.handle, "C_GetFunctionList"));
    if (get_list == nullptr) {
        throw Failure{CKR_OK, "dlsym", init.library() + " has no C_GetFunctionList"};
    }
    check(get_list(&lib.f), "C_GetFunctionList");
    CK_C_INITIALIZE_ARGS args{};
    args.flags = CKF_OS_LOCKING_OK;
    check(lib.f->C_Initialize(&args), "C_Initialize");
    CK_INFO info{};
    if (lib.f->C_GetInfo(&info) == CKR_OK) {
        out.set_library_description(
            padded(info.libraryDescription, sizeof info.libraryDescription));
    }
    try {
        find_token(lib, init.token(), out);
    } catch (const Failure& failure) {
        // Asked only here: a library whose C_WaitForSlotEvent blocks in spite
        // of CKF_DONT_BLOCK then delays an absent member's retry, never the
        // start of one whose token is there.
        if (!init.watch_if_absent() || failure.rv != CKR_TOKEN_NOT_PRESENT ||
            !reports_slot_events(lib)) {
            throw;
        }
        out.Clear();
        out.set_token_absent(true);
        return failure.message;
    }
    CK_ULONG count = 0;
    check(lib.f->C_GetMechanismList(lib.slot, nullptr, &count), "C_GetMechanismList");
    // One element of slack: p11-kit's client (0.24) reads one past the end
    // of the array while dropping the mechanisms it does not forward.
    std::vector<CK_MECHANISM_TYPE> mechanisms(count + 1);
    check(lib.f->C_GetMechanismList(lib.slot, mechanisms.data(), &count), "C_GetMechanismList");
    for (CK_ULONG i = 0; i < count; ++i) {
        out.add_mechanisms(mechanisms[i]);
    }
    return {};
}

// One channel: its session, opened on first use.
class Channel {
public:
    explicit Channel(Library& lib) : lib_(lib) {}
    ~Channel() {
        if (session_ != CK_INVALID_HANDLE) {
            lib_.f->C_CloseSession(session_);
        }
    }
    Channel(const Channel&) = delete;
    Channel& operator=(const Channel&) = delete;

    CK_SESSION_HANDLE session() {
        if (session_ == CK_INVALID_HANDLE) {
            check(lib_.f->C_OpenSession(lib_.slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr,
                                        nullptr, &session_),
                  "C_OpenSession");
        }
        return session_;
    }
    CK_FUNCTION_LIST* f() const noexcept { return lib_.f; }
    CK_SLOT_ID slot() const noexcept { return lib_.slot; }

private:
    Library& lib_;
    CK_SESSION_HANDLE session_ = CK_INVALID_HANDLE;
};

Bytes attribute(Channel& ch, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
    CK_ATTRIBUTE a{type, nullptr, 0};
    if (ch.f()->C_GetAttributeValue(ch.session(), object, &a, 1) != CKR_OK ||
        a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
        return {};
    }
    Bytes value(a.ulValueLen);
    a.pValue = value.data();
    if (ch.f()->C_GetAttributeValue(ch.session(), object, &a, 1) != CKR_OK) {
        return {};
    }
    value.resize(a.ulValueLen);
    return value;
}

CK_ULONG ulong_attribute(Channel& ch, CK_OBJECT_HANDLE object, CK_ATTRIBUTE_TYPE type) {
    CK_ULONG value = CK_UNAVAILABLE_INFORMATION;
    CK_ATTRIBUTE a{type, &value, sizeof value};
    if (ch.f()->C_GetAttributeValue(ch.session(), object, &a, 1) != CKR_OK) {
        return CK_UNAVAILABLE_INFORMATION;
    }
    return value;
}

std::vector<CK_OBJECT_HANDLE> find(Channel& ch, CK_OBJECT_CLASS object_class) {
    CK_ATTRIBUTE want{CKA_CLASS, &object_class, sizeof object_class};
    check(ch.f()->C_FindObjectsInit(ch.session(), &want, 1), "C_FindObjectsInit");
    std::vector<CK_OBJECT_HANDLE> found;
    CK_OBJECT_HANDLE batch[64];
    CK_ULONG count = 0;
    CK_RV rv = CKR_OK;
    while ((rv = ch.f()->C_FindObjects(ch.session(), batch, 64, &count)) == CKR_OK && count > 0) {
        found.insert(found.end(), batch, batch + count);
    }
    ch.f()->C_FindObjectsFinal(ch.session());
    check(rv, "C_FindObjects");
    return found;
}

void describe_key(Channel& ch, CK_OBJECT_HANDLE object, CK_OBJECT_CLASS object_class,
                  worker::Key& key) {
    key.set_handle(object);
    key.set_object_class(object_class);
    const auto type = ulong_attribute(ch, object, CKA_KEY_TYPE);
    key.set_key_type(type);
    auto id = attribute(ch, object, CKA_ID);
    key.set_id(std::string(id.begin(), id.end()));
    auto label = attribute(ch, object, CKA_LABEL);
    key.set_label(std::string(label.begin(), label.end()));
    std::optional<PublicKey> pub;
    if (type == CKK_RSA) {
        pub = rsa_public_key(attribute(ch, object, CKA_MODULUS),
                             attribute(ch, object, CKA_PUBLIC_EXPONENT));
    } else if (type == CKK_EC && object_class == CKO_PUBLIC_KEY) {
        pub = ec_public_key(attribute(ch, object, CKA_EC_PARAMS),
                            attribute(ch, object, CKA_EC_POINT));
    }
    if (pub) {
        key.set_public_der(std::string(pub->spki.begin(), pub->spki.end()));
        key.set_bits(pub->bits);
    } else if (type == CKK_EC) {
        // A private EC key shows its curve only: its size tells P-256 from P-384.
        if (auto bits = ec_curve_bits(attribute(ch, object, CKA_EC_PARAMS))) {
            key.set_bits(*bits);
        }
    }
}

// One page of the inventory: the keys from `offset` on, until half a frame
// is full (a token may hold tens of thousands).
void inventory(Channel& ch, std::uint32_t offset, worker::InventoryReply& out) {
    std::vector<std::pair<CK_OBJECT_HANDLE, CK_OBJECT_CLASS>> objects;
    for (CK_OBJECT_CLASS object_class : {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY}) {
        for (auto object : find(ch, object_class)) {
            objects.emplace_back(object, object_class);
        }
    }
    std::size_t size = 0;
    for (std::size_t i = offset; i < objects.size(); ++i) {
        auto& key = *out.add_keys();
        describe_key(ch, objects[i].first, objects[i].second, key);
        size += key.ByteSizeLong() + 8;
        if (size > hsm::kMaxFrame / 2 && i + 1 < objects.size()) {
            out.set_next(static_cast<std::uint32_t>(i + 1));
            return;
        }
    }
}

using CryptoInit = CK_RV (*)(CK_SESSION_HANDLE, CK_MECHANISM*, CK_OBJECT_HANDLE);
using CryptoCall = CK_RV (*)(CK_SESSION_HANDLE, CK_BYTE*, CK_ULONG, CK_BYTE*, CK_ULONG*);

// One single-part operation (C_Sign, C_Encrypt, C_Decrypt), its output
// sized by the library when the first guess is too small.
std::string single_part(Channel& ch, const worker::Operation& op, Use use, CryptoInit init,
                        CryptoCall call, const char* init_name, const char* call_name) {
    MechanismCall mech(hsm::codec::from_wire(op.mechanism()),
                       Bytes(op.data().begin(), op.data().end()), use);
    check(init(ch.session(), mech.mechanism(), op.handle()), init_name);
    std::string out(std::max<std::size_t>(1024, op.data().size() + 64), '\0');
    CK_ULONG length = out.size();
    auto& in = mech.input();
    CK_RV rv =
        call(ch.session(), in.data(), in.size(), reinterpret_cast<CK_BYTE*>(out.data()), &length);
    if (rv == CKR_BUFFER_TOO_SMALL) {
        out.resize(length);
        rv = call(ch.session(), in.data(), in.size(), reinterpret_cast<CK_BYTE*>(out.data()),
                  &length);
    }
    check(rv, call_name);
    out.resize(length);
    return out;
}

void verify(Channel& ch, const worker::Operation& op) {
    MechanismCall mech(hsm::codec::from_wire(op.mechanism()),
                       Bytes(op.data().begin(), op.data().end()), Use::verify);
    check(ch.f()->C_VerifyInit(ch.session(), mech.mechanism(), op.handle()), "C_VerifyInit");
    auto& in = mech.input();
    std::string signature = op.signature();
    check(ch.f()->C_Verify(ch.session(), in.data(), in.size(),
                           reinterpret_cast<CK_BYTE*>(signature.data()), signature.size()),
          "C_Verify");
}

// Refuses a login that could lock the token: its user PIN is locked, or
// the next wrong PIN would lock it (the service cannot tell a right PIN from
// a wrong one before trying it; the vendor's tools reset the count).
void refuse_final_try(Channel& ch) {
    CK_TOKEN_INFO info{};
    if (ch.f()->C_GetTokenInfo(ch.slot(), &info) != CKR_OK) {
        return; // the login itself will say what is wrong
    }
    if ((info.flags & CKF_USER_PIN_LOCKED) != 0) {
        throw Failure{CKR_PIN_LOCKED, "C_Login", "the token's user PIN is locked"};
    }
    if ((info.flags & CKF_USER_PIN_FINAL_TRY) != 0) {
        throw Failure{CKR_PIN_LOCKED, "C_Login",
                      "one more wrong PIN would lock the token: not tried (log in once with the "
                      "vendor's tools to reset its count)"};
    }
}

void login(Channel& ch, worker::Login& login) {
    auto* pin = login.mutable_pin();
    try {
        refuse_final_try(ch);
    } catch (const Failure&) {
        if (!pin->empty()) {
            secure_wipe(pin->data(), pin->size());
        }
        throw;
    }
    CK_RV rv = ch.f()->C_Login(ch.session(), CKU_USER, reinterpret_cast<CK_BYTE*>(pin->data()),
                               pin->size());
    if (!pin->empty()) {
        secure_wipe(pin->data(), pin->size());
    }
    check(rv, "C_Login");
}

void probe(Channel& ch, worker::ProbeReply& out) {
    CK_SESSION_INFO info{};
    check(ch.f()->C_GetSessionInfo(ch.session(), &info), "C_GetSessionInfo");
    out.set_logged_in(info.state == CKS_RO_USER_FUNCTIONS || info.state == CKS_RW_USER_FUNCTIONS);
}

void answer(Channel& ch, worker::Request& request, worker::Reply& out) {
    auto* f = ch.f();
    switch (request.body_case()) {
    case worker::Request::kProbe:
        return probe(ch, *out.mutable_probe());
    case worker::Request::kLogin:
        return login(ch, *request.mutable_login());
    case worker::Request::kLogout: {
        CK_RV rv = f->C_Logout(ch.session());
        return check(rv == CKR_USER_NOT_LOGGED_IN ? CKR_OK : rv, "C_Logout");
    }
    case worker::Request::kInventory:
        return inventory(ch, request.inventory().offset(), *out.mutable_inventory());
    case worker::Request::kSign:
        *out.mutable_data() = single_part(ch, request.sign(), Use::sign, f->C_SignInit, f->C_Sign,
                                          "C_SignInit", "C_Sign");
        return;
    case worker::Request::kVerify:
        return verify(ch, request.verify());
    case worker::Request::kEncrypt:
        *out.mutable_data() = single_part(ch, request.encrypt(), Use::encrypt, f->C_EncryptInit,
                                          f->C_Encrypt, "C_EncryptInit", "C_Encrypt");
        return;
    case worker::Request::kDecrypt:
        *out.mutable_data() = single_part(ch, request.decrypt(), Use::decrypt, f->C_DecryptInit,
                                          f->C_Decrypt, "C_DecryptInit", "C_Decrypt");
        return;
    case worker::Request::kRandom: {
        std::string data(request.random().length(), '\0');
        check(
            f->C_GenerateRandom(ch.session(), reinterpret_cast<CK_BYTE*>(data.data()), data.size()),
            "C_GenerateRandom");
        *out.mutable_data() = std::move(data);
        return;
    }
    case worker::Request::kWaitSlotEvent: {
        CK_SLOT_ID slot = 0;
        check(f->C_WaitForSlotEvent(0, &slot, nullptr), "C_WaitForSlotEvent");
        out.mutable_slot_event()->set_slot(slot);
        return;
    }
    case worker::Request::kInit:
    case worker::Request::BODY_NOT_SET:
        break;
    }
    throw Failure{CKR_OK, "request", "not a request this channel serves"};
}

// Reads one request; false when the service closed the channel.
bool read_request(int fd, hsm::FrameReader& reader, worker::Request& request) {
    try {
        auto frame = hsm::read_frame(fd, reader, std::chrono::steady_clock::now() + kForever);
        return request.ParseFromArray(frame.data(), static_cast<int>(frame.size()));
    } catch (const Error&) {
        return false;
    }
}

void send(int fd, const worker::Reply& out) {
    std::string bytes = out.SerializeAsString();
    hsm::write_frame(fd,
                     std::span(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()),
                     std::chrono::steady_clock::now() + std::chrono::seconds(30));
}

// Sends the reply; one too large for a frame (an inventory of thousands of
// keys) is answered with a failure instead. False when the service is gone.
bool reply(int fd, worker::Reply& out) {
    try {
        if (out.ByteSizeLong() > hsm::kMaxFrame) {
            const auto size = out.ByteSizeLong();
            out.Clear();
            out.set_function("worker");
            out.set_message("the answer (" + std::to_string(size) + " bytes) is larger than " +
                            std::to_string(hsm::kMaxFrame) + " bytes: too many objects");
        }
        send(fd, out);
        return true;
    } catch (const Error&) {
        return false;
    }
}

void fail(worker::Reply& out, const Failure& failure) {
    out.Clear();
    out.set_rv(failure.rv);
    out.set_function(failure.function.empty() ? "worker" : failure.function);
    out.set_message(failure.message);
}

void serve_channel(Library& lib, int fd) {
    {
        std::unique_lock lock(lib.mutex);
        lib.ready_cv.wait(lock, [&] { return lib.ready; });
    }
    Channel ch(lib);
    hsm::FrameReader reader;
    worker::Request request;
    worker::Reply out;
    while (read_request(fd, reader, request)) {
        out.Clear();
        try {
            answer(ch, request, out);
        } catch (const Failure& failure) {
            fail(out, failure);
        } catch (const Error& e) {
            fail(out, Failure{CKR_ARGUMENTS_BAD, "worker", e.what()});
        }
        if (!reply(fd, out)) {
            return;
        }
        if (request.has_login()) {
            wipe_stack(); // what parsing the PIN left below this frame
        }
    }
}

} // namespace

int run_worker(int channels) noexcept {
    if (channels < 1 || channels > kMaxChannels) {
        return 2;
    }
    try {
        make_undumpable(); // the PIN passes through here
        // A library writing to a server that went away gets EPIPE, not a signal.
        ::signal(SIGPIPE, SIG_IGN);
        Library lib;
        hsm::FrameReader reader;
        worker::Request request;
        if (!read_request(kFirstChannelFd, reader, request) || !request.has_init()) {
            return 2;
        }
        worker::Reply out;
        try {
            out.set_message(initialise(lib, request.init(), *out.mutable_init()));
        } catch (const Failure& failure) {
            fail(out, failure);
            reply(kFirstChannelFd, out);
            return 1;
        }
        if (!reply(kFirstChannelFd, out)) {
            return 1;
        }
        std::vector<std::thread> threads;
        for (int c = 1; c < channels; ++c) {
            threads.emplace_back([&lib, c] { serve_channel(lib, kFirstChannelFd + c); });
        }
        {
            std::lock_guard lock(lib.mutex);
            lib.ready = true;
        }
        lib.ready_cv.notify_all();
        serve_channel(lib, kFirstChannelFd);
        // The service closed channel 0: it is done with this worker. The
        // library is not finalised (a hung library must not keep the
        // process); the process ends with its sessions.
        std::_Exit(0);
    } catch (...) {
        std::_Exit(3);
    }
}

} // namespace preloadrun::sim::member
