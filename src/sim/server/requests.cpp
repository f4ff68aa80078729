#include "server/requests.hpp"

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "preloadrun/version.hpp"
#include "server/validation.hpp"
#include "wire/codec.hpp"

#include <algorithm>
#include <iterator>

namespace preloadrun::sim {

namespace {

using wire::Request;
using wire::Response;

std::string to_field(const Bytes& bytes) {
    return std::string(bytes.begin(), bytes.end());
}

Bytes bytes_of(const std::string& field) {
    return Bytes(field.begin(), field.end());
}

hsm::ModuleAction action_of(wire::ModuleAction action) {
    switch (action) {
    case wire::MODULE_CLEAR:
        return hsm::ModuleAction::clear;
    case wire::MODULE_FAIL:
        return hsm::ModuleAction::fail;
    case wire::MODULE_RESTORE:
        return hsm::ModuleAction::restore;
    case wire::MODULE_REMOVE:
        return hsm::ModuleAction::remove;
    case wire::MODULE_DRAIN:
        return hsm::ModuleAction::drain;
    case wire::MODULE_UNDRAIN:
        return hsm::ModuleAction::undrain;
    default:
        throw Error(ErrorCode::usage,
                    "module action must be clear, fail, restore, remove, drain or undrain");
    }
}

void set_data(Response& response, const Bytes& data) {
    response.mutable_data()->set_data(to_field(data));
}

// 1..the number of modules.
std::uint32_t module_number(const RequestContext& s, std::uint32_t number) {
    return validate::module_number(number, s.fleet.size());
}

// The module a request names (1..the number of modules).
Module& module_at(const RequestContext& s, std::uint32_t number) {
    return s.fleet.module(module_number(s, number));
}

// Who sent it: what it loads is the uid's and goes with its process.
Caller caller_of(const Peer& peer) {
    return Caller{peer.uid, peer.client};
}

// The module of a request that names one only with a token handle (a
// module-protected key, a token without a handle: the module is not used).
std::uint32_t module_if_token(const RequestContext& s, std::uint32_t number,
                              hsm::ObjectHandle token_handle) {
    return token_handle == 0 ? number : module_number(s, number);
}

// What destroys keys and tokens; Error(usage) where the service does not.
Destroyer& destroyer_of(const RequestContext& s) {
    if (s.destroyer == nullptr) {
        throw Error(ErrorCode::usage, "the keys and tokens of PKCS#11 members are destroyed with "
                                      "their vendor's tools, not through this service");
    }
    return *s.destroyer;
}

// ---- the answers, in the order of wire.proto ----

void hello(const RequestContext& s, const Request& request, const Peer&, Response& out) {
    const auto& hello = request.hello();
    if (hello.version() != hsm::codec::kProtocolVersion) {
        throw Error(ErrorCode::protocol,
                    "client speaks protocol version " + std::to_string(hello.version()) + ", " +
                        server_name() + " speaks version " +
                        std::to_string(hsm::codec::kProtocolVersion) + ": upgrade the older one");
    }
    auto* reply = out.mutable_hello();
    reply->set_version(hsm::codec::kProtocolVersion);
    reply->set_server(server_name());
    reply->set_world_id(to_field(s.catalog.id()));
    reply->set_instance(to_field(s.fleet.instance()));
}

void list_modules(const RequestContext& s, const Request&, const Peer&, Response& out) {
    set_modules(out, s.fleet.list());
}

void get_world(const RequestContext& s, const Request&, const Peer&, Response& out) {
    auto* world = out.mutable_world();
    world->set_world_id(to_field(s.catalog.id()));
    world->set_modules(s.fleet.size());
}

void list_tokens(const RequestContext& s, const Request& request, const Peer&, Response& out) {
    *out.mutable_tokens() =
        token_page(s.catalog, validate::token_cursor(request.list_tokens().after()), s.pages);
}

void list_keys(const RequestContext& s, const Request& request, const Peer&, Response& out) {
    *out.mutable_keys() =
        key_page(s.catalog, validate::key_cursor(request.list_keys().after()), s.pages);
}

void create_token(const RequestContext& s, const Request& request, const Peer& peer,
                  Response& out) {
    const auto& r = request.create_token();
    auto type = validate::token_type(r.type());
    const auto& name = validate::token_name(r.name());
    auto passphrase = validate::passphrase(r.passphrase(), true);
    *out.mutable_token() =
        hsm::codec::to_wire(s.catalog.create_token(type, name, passphrase, peer.uid));
}

void load_token(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.load_token();
    auto& module = module_at(s, r.module());
    auto hash = validate::token_hash(r.token_hash());
    auto passphrase = validate::passphrase(r.passphrase(), false);
    out.mutable_handle()->set_handle(module.load_token(caller_of(peer), hash, passphrase));
    s.clients.note_loaded(peer.pid, peer.client);
}

void change_passphrase(const RequestContext& s, const Request& request, const Peer& peer,
                       Response& out) {
    const auto& r = request.change_passphrase();
    auto& module = module_at(s, r.module());
    auto hash = validate::token_hash(r.token_hash());
    auto passphrase = validate::passphrase(r.passphrase(), false);
    auto fresh = validate::passphrase(r.new_passphrase(), true);
    module.change_passphrase(caller_of(peer), hash, passphrase, fresh);
    out.mutable_ok();
}

void load_key(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.load_key();
    auto& module = module_at(s, r.module());
    const auto& ident = validate::ident(r.ident());
    out.mutable_handle()->set_handle(module.load_key(caller_of(peer), ident, r.token_handle()));
    s.clients.note_loaded(peer.pid, peer.client);
}

// At most this many keys in one LoadKeys (wire.proto).
constexpr int kMaxKeyLoads = 1024;

void load_keys(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.load_keys();
    auto& module = module_at(s, r.module());
    if (r.keys_size() == 0 || r.keys_size() > kMaxKeyLoads) {
        throw Error(ErrorCode::usage,
                    "LoadKeys takes 1 to " + std::to_string(kMaxKeyLoads) + " keys");
    }
    auto* results = out.mutable_key_loads();
    bool any = false;
    for (const auto& key : r.keys()) {
        auto* result = results->add_results();
        try {
            const auto& ident = validate::ident(key.ident());
            result->set_handle(module.load_key(caller_of(peer), ident, key.token_handle()));
            any = true;
        } catch (const Error& e) {
            *result->mutable_error() = hsm::codec::error_response(0, e).error();
        }
    }
    if (any) {
        s.clients.note_loaded(peer.pid, peer.client);
    }
}

void unload(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.unload();
    module_at(s, r.module()).unload(caller_of(peer), r.handle());
    out.mutable_ok();
}

void generate_key(const RequestContext& s, const Request& request, const Peer& peer,
                  Response& out) {
    const auto& r = request.generate_key();
    auto& module = module_at(s, r.module());
    auto spec = validate::key_spec(r);
    auto generated = module.generate_key(caller_of(peer), spec);
    s.clients.note_loaded(peer.pid, peer.client);
    auto* body = out.mutable_generated();
    body->set_handle(generated.handle);
    *body->mutable_key() = hsm::codec::to_wire(generated.key);
}

void destroy_key(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.destroy_key();
    const auto& ident = validate::ident(r.ident());
    auto module = module_if_token(s, r.module(), r.token_handle());
    destroyer_of(s).destroy_key(module, ident, r.token_handle(), peer.uid);
    out.mutable_ok();
}

void destroy_token(const RequestContext& s, const Request& request, const Peer& peer,
                   Response& out) {
    const auto& r = request.destroy_token();
    auto hash = validate::token_hash(r.token_hash());
    auto module = module_if_token(s, r.module(), r.token_handle()); // else: permission
    destroyer_of(s).destroy_token(module, hash, r.token_handle(), r.with_keys(), peer.uid);
    out.mutable_ok();
}

// Sign, Encrypt and Decrypt: data in, data out, with a key and a mechanism.
using DataOperation = Bytes (Module::*)(const Caller&, hsm::ObjectHandle, const hsm::Mechanism&,
                                        const Bytes&);
template <class Body>
void answer_data(const RequestContext& s, const Body& r, const Peer& peer, Response& out,
                 DataOperation operation) {
    auto& module = module_at(s, r.module());
    auto mech = validate::mechanism(r.mechanism());
    set_data(out, (module.*operation)(caller_of(peer), r.handle(), mech, bytes_of(r.data())));
}

void sign(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    answer_data(s, request.sign(), peer, out, &Module::sign);
}

void verify(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.verify();
    auto& module = module_at(s, r.module());
    auto mech = validate::mechanism(r.mechanism());
    module.verify(caller_of(peer), r.handle(), mech, bytes_of(r.data()), bytes_of(r.signature()));
    out.mutable_ok();
}

void encrypt(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    answer_data(s, request.encrypt(), peer, out, &Module::encrypt);
}

void decrypt(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    answer_data(s, request.decrypt(), peer, out, &Module::decrypt);
}

void wrap_key(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.wrap_key();
    auto& module = module_at(s, r.module());
    auto mech = validate::mechanism(r.mechanism());
    if (!hsm::is_wrap(mech.kind)) {
        throw Error(ErrorCode::usage, "not a mechanism that wraps keys");
    }
    set_data(out, module.wrap_key(caller_of(peer), r.wrapping_key(), mech, r.key()));
}

void public_key_operation(const RequestContext& s, const Request& request, const Peer& peer,
                          Response& out) {
    const auto& r = request.public_key_operation();
    auto& module = module_at(s, r.module());
    const auto public_key = validate::public_key(r.public_key());
    auto mech = validate::mechanism(r.mechanism());
    using hsm::MechanismKind;
    if (r.encrypt()) {
        if (!hsm::is_rsa_encryption(mech.kind)) {
            throw Error(ErrorCode::usage, "a public key encrypts with RSA PKCS#1 or OAEP");
        }
        set_data(out, module.encrypt_public(caller_of(peer), public_key, mech, bytes_of(r.data())));
        return;
    }
    if (mech.kind != MechanismKind::rsa_pkcs1 && mech.kind != MechanismKind::rsa_pss &&
        mech.kind != MechanismKind::ecdsa) {
        throw Error(ErrorCode::usage, "a public key verifies RSA PKCS#1, PSS and ECDSA signatures");
    }
    module.verify_public(caller_of(peer), public_key, mech, bytes_of(r.data()),
                         bytes_of(r.signature()));
    out.mutable_ok();
}

void random(const RequestContext& s, const Request& request, const Peer& peer, Response& out) {
    const auto& r = request.random();
    auto& module = module_at(s, r.module());
    set_data(out, module.random(caller_of(peer), validate::random_length(r.length())));
}

// A stream, not an answer: the connection calls Handler::subscribe().
void subscribe(const RequestContext&, const Request&, const Peer&, Response&) {
    throw Error(ErrorCode::internal, "Subscribe reached the plain request handler");
}

void control_module(const RequestContext& s, const Request& request, const Peer&, Response& out) {
    const auto& r = request.control_module();
    auto module = module_number(s, r.module());
    *out.mutable_module() = hsm::codec::to_wire(s.fleet.control(module, action_of(r.action())));
}

void add_module(const RequestContext& s, const Request&, const Peer&, Response& out) {
    *out.mutable_module() = hsm::codec::to_wire(s.fleet.add());
}

void set_latency(const RequestContext& s, const Request& request, const Peer&, Response& out) {
    const auto& r = request.set_latency();
    if (r.latency_ms() > 60000) {
        throw Error(ErrorCode::usage, "latency at most 60000 ms");
    }
    *out.mutable_module() =
        hsm::codec::to_wire(s.fleet.set_latency(module_number(s, r.module()), r.latency_ms()));
}

void fail_next(const RequestContext& s, const Request& request, const Peer&, Response& out) {
    const auto& r = request.fail_next();
    *out.mutable_module() =
        hsm::codec::to_wire(s.fleet.fail_next(module_number(s, r.module()), r.count()));
}

// ---- the secrets ----

std::string* create_token_passphrase(Request& request) {
    return request.mutable_create_token()->mutable_passphrase();
}

std::string* load_token_passphrase(Request& request) {
    return request.mutable_load_token()->mutable_passphrase();
}

std::string* generate_key_value(Request& request) {
    return request.mutable_generate_key()->mutable_value();
}

void wipe(std::string* s);

// Two secrets: the old passphrase is wiped here, the new one returned.
std::string* change_passphrase_secrets(Request& request) {
    auto* body = request.mutable_change_passphrase();
    wipe(body->mutable_passphrase());
    return body->mutable_new_passphrase();
}

// Who may send a request: any client, or only the admin socket.
constexpr bool kAdmin = true;
constexpr bool kAnyone = false;
constexpr std::nullptr_t kNoSecret = nullptr;

// Every request the service answers, in the order of wire.proto.

// clang-format off
constexpr RequestKind kRequests[] = {
    // body                     name             who      secret                   answer
    {Request::kHello,           "Hello",         kAnyone, kNoSecret,               hello},
    {Request::kListModules,     "ListModules",   kAnyone, kNoSecret,               list_modules},
    {Request::kGetWorld,        "GetWorld",      kAnyone, kNoSecret,               get_world},
    {Request::kListTokens,      "ListTokens",    kAnyone, kNoSecret,               list_tokens},
    {Request::kListKeys,        "ListKeys",      kAnyone, kNoSecret,               list_keys},
    {Request::kCreateToken,     "CreateToken",   kAnyone, create_token_passphrase, create_token},
    {Request::kLoadToken,       "LoadToken",     kAnyone, load_token_passphrase,   load_token},
    {Request::kLoadKey,         "LoadKey",       kAnyone, kNoSecret,               load_key},
    {Request::kLoadKeys,        "LoadKeys",      kAnyone, kNoSecret,               load_keys},
    {Request::kUnload,          "Unload",        kAnyone, kNoSecret,               unload},
    {Request::kGenerateKey,     "GenerateKey",   kAnyone, generate_key_value,      generate_key},
    {Request::kDestroyKey,      "DestroyKey",    kAnyone, kNoSecret,               destroy_key},
    {Request::kDestroyToken,    "DestroyToken",  kAnyone, kNoSecret,               destroy_token},
    {Request::kChangePassphrase, "ChangePassphrase", kAnyone, change_passphrase_secrets, change_passphrase},
    {Request::kWrapKey,         "WrapKey",       kAnyone, kNoSecret,               wrap_key},
    {Request::kPublicKeyOperation, "PublicKeyOperation", kAnyone, kNoSecret,       public_key_operation},
    {Request::kSign,            "Sign",          kAnyone, kNoSecret,               sign},
    {Request::kVerify,          "Verify",        kAnyone, kNoSecret,               verify},
    {Request::kEncrypt,         "Encrypt",       kAnyone, kNoSecret,               encrypt},
    {Request::kDecrypt,         "Decrypt",       kAnyone, kNoSecret,               decrypt},
    {Request::kRandom,          "Random",        kAnyone, kNoSecret,               random},
    {Request::kSubscribe,       "Subscribe",     kAnyone, kNoSecret,               subscribe},
    {Request::kControlModule,   "ControlModule", kAdmin,  kNoSecret,               control_module},
    {Request::kAddModule,       "AddModule",     kAdmin,  kNoSecret,               add_module},
    {Request::kSetLatency,      "SetLatency",    kAdmin,  kNoSecret,               set_latency},
    {Request::kFailNext,        "FailNext",      kAdmin,  kNoSecret,               fail_next},
};
// clang-format on

void wipe(std::string* s) {
    if (!s->empty()) {
        secure_wipe(s->data(), s->size());
    }
    s->clear();
}

} // namespace

void set_modules(wire::Response& response, const std::vector<hsm::ModuleInfo>& modules) {
    auto* list = response.mutable_modules();
    for (const auto& m : modules) {
        *list->add_modules() = hsm::codec::to_wire(m);
    }
}

std::string server_name() {
    return std::string("hsmsim ") + kVersion;
}

const RequestKind* request_kind(const Request& request) {
    const auto body = request.body_case();
    const auto* it = std::find_if(std::begin(kRequests), std::end(kRequests),
                                  [body](const RequestKind& kind) { return kind.body == body; });
    return it == std::end(kRequests) ? nullptr : it;
}

std::span<const RequestKind> request_kinds() {
    return kRequests;
}

bool is_admin_request(const Request& request) {
    const auto* kind = request_kind(request);
    return kind != nullptr && kind->admin;
}

std::string_view request_name(const Request& request) {
    const auto* kind = request_kind(request);
    return kind != nullptr ? kind->name : "(empty request)";
}

void wipe_secrets(Request& request) {
    const auto* kind = request_kind(request);
    if (kind != nullptr && kind->secret != nullptr) {
        wipe(kind->secret(request));
    }
}

} // namespace preloadrun::sim
