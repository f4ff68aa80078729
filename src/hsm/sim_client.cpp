#include "preloadrun/hsm/sim_client.hpp"

#include "client_connection.hpp"
#include "preloadrun/common/wiping_allocator.hpp"
#include "wire/bytes_field.hpp"
#include "wire/codec.hpp"
#include "wire/utf8.hpp"

#include <algorithm>
#include <tuple>

namespace preloadrun::hsm {

using detail::from_field;
using detail::to_field;
using wire_detail::Connection;
using Body = wire::Response::BodyCase;

namespace {

constexpr const char* kClientVariable = kSocketVariable.name;
constexpr const char* kAdminVariable = kAdminSocketVariable.name;

// Copies a passphrase (or any secret) into a protobuf field in place (no temporary string)
// and wipes the field when the request goes out of scope. Declare it after
// the request so that it runs first.
class PassphraseField {
public:
    PassphraseField(std::string* field, const SecureBuffer& passphrase) : field_(field) {
        field_->assign(passphrase.view());
    }
    PassphraseField(const PassphraseField&) = delete;
    PassphraseField& operator=(const PassphraseField&) = delete;
    ~PassphraseField() {
        secure_wipe(field_->data(), field_->size());
        wipe_stack(); // what serialising the request left below this frame
    }

private:
    std::string* field_;
};

template <class Info, class Repeated> auto list_from_wire(const Repeated& items) {
    std::vector<Info> out;
    out.reserve(static_cast<std::size_t>(items.size()));
    for (const auto& item : items) {
        out.push_back(codec::from_wire(item));
    }
    return out;
}

// Every entry of a paged listing: `page(after)` returns the page after the
// cursor `after` ("" for the first), and its `next` cursor ("" after the
// last page). Each cursor must come after the previous one, so a listing
// always ends.
// `entries(list)` is the repeated field of a page.
template <class Info, class Page, class Entries>
std::vector<Info> fetch_pages(Page page, Entries entries) {
    constexpr std::size_t kMaxEntries = 10'000'000;
    std::vector<Info> out;
    std::string after;
    for (;;) {
        const auto list = page(after);
        for (const auto& item : entries(list)) {
            out.push_back(codec::from_wire(item));
        }
        if (out.size() > kMaxEntries) {
            throw Error(ErrorCode::limit, "the HSM service lists more than " +
                                              std::to_string(kMaxEntries) + " entries");
        }
        if (list.next().empty()) {
            return out;
        }
        if (list.next() <= after) {
            throw Error(ErrorCode::protocol,
                        "the HSM service's listing does not advance (cursor '" + list.next() +
                            "' after '" + after + "')");
        }
        after = list.next();
    }
}

// Names, labels and idents travel as protobuf strings, which must be UTF-8.
const std::string& text(const std::string& value, const char* what) {
    if (!detail::is_utf8(value)) {
        throw Error(ErrorCode::usage, std::string(what) + " is not valid UTF-8");
    }
    return value;
}

ObjectHandle handle_from(const wire::Response& response) {
    if (response.handle().handle() == 0) {
        throw Error(ErrorCode::protocol, "the HSM service returned object handle 0");
    }
    return response.handle().handle();
}

wire::ModuleAction action_to_wire(ModuleAction action) {
    switch (action) {
    case ModuleAction::clear:
        return wire::MODULE_CLEAR;
    case ModuleAction::fail:
        return wire::MODULE_FAIL;
    case ModuleAction::restore:
        return wire::MODULE_RESTORE;
    case ModuleAction::remove:
        return wire::MODULE_REMOVE;
    case ModuleAction::drain:
        return wire::MODULE_DRAIN;
    case ModuleAction::undrain:
        return wire::MODULE_UNDRAIN;
    }
    throw Error(ErrorCode::internal, "bad ModuleAction");
}

// Fills the fields shared by Sign, Verify, Encrypt and Decrypt.
template <class Operation>
void set_operation(Operation* body, std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                   const Bytes& data) {
    body->set_module(module);
    body->set_handle(key);
    *body->mutable_mechanism() = codec::to_wire(mech);
    body->set_data(to_field(data));
}

class SimEventStream final : public EventStream {
public:
    explicit SimEventStream(std::unique_ptr<Connection> conn) : conn_(std::move(conn)) {
        wire::Request request;
        request.mutable_subscribe();
        const auto response = conn_->call(request, Body::kModules);
        snapshot_ = list_from_wire<ModuleInfo>(response.modules().modules());
    }

    const std::vector<ModuleInfo>& snapshot() const override { return snapshot_; }
    const Bytes& instance() const noexcept override { return conn_->instance(); }
    int fd() const override { return conn_->fd(); }

    std::optional<ModuleEvent> next(std::chrono::milliseconds timeout) override {
        auto event = conn_->next_event(std::chrono::steady_clock::now() + timeout);
        if (!event) {
            return std::nullopt;
        }
        return codec::from_wire(*event);
    }

private:
    std::unique_ptr<Connection> conn_;
    std::vector<ModuleInfo> snapshot_;
};

} // namespace

// ---- SimClient -------------------------------------------------------------------

SimClient::SimClient(const Endpoint& endpoint)
    : conn_(std::make_unique<Connection>(endpoint, kClientVariable)) {}

SimClient::~SimClient() = default;

const Bytes& SimClient::world_id() const noexcept {
    return conn_->world_id();
}

const Bytes& SimClient::instance() const noexcept {
    return conn_->instance();
}

const std::string& SimClient::server_name() const noexcept {
    return conn_->hello().server();
}

WorldInfo SimClient::world() {
    wire::Request request;
    request.mutable_get_world();
    const auto response = conn_->call(request, Body::kWorld);
    return {from_field(response.world().world_id()), response.world().modules()};
}

std::vector<ModuleInfo> SimClient::modules() {
    wire::Request request;
    request.mutable_list_modules();
    return list_from_wire<ModuleInfo>(conn_->call(request, Body::kModules).modules().modules());
}

std::vector<TokenInfo> SimClient::tokens() {
    auto out = fetch_pages<TokenInfo>(
        [this](const std::string& after) {
            wire::Request request;
            request.mutable_list_tokens()->set_after(after);
            return std::move(*conn_->call(request, Body::kTokens).mutable_tokens());
        },
        [](const wire::TokenList& list) -> const auto& { return list.tokens(); });
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.type, a.name) < std::tie(b.type, b.name);
    });
    return out;
}

std::vector<KeyInfo> SimClient::keys() {
    auto out = fetch_pages<KeyInfo>(
        [this](const std::string& after) {
            wire::Request request;
            request.mutable_list_keys()->set_after(after);
            return std::move(*conn_->call(request, Body::kKeys).mutable_keys());
        },
        [](const wire::KeyList& list) -> const auto& { return list.keys(); });
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
        return std::tie(a.label, a.ident) < std::tie(b.label, b.ident);
    });
    return out;
}

TokenInfo SimClient::create_token(TokenType type, const std::string& name,
                                  const SecureBuffer& passphrase) {
    wire::Request request;
    auto* body = request.mutable_create_token();
    body->set_type(codec::to_wire(type));
    body->set_name(text(name, "the token name"));
    const PassphraseField secret(body->mutable_passphrase(), passphrase);
    return codec::from_wire(conn_->call(request, Body::kToken).token());
}

namespace {
constexpr std::chrono::milliseconds kKeyGenerationTimeout{120'000};
constexpr std::chrono::milliseconds kTokenLoadTimeout{120'000};
} // namespace

ObjectHandle SimClient::load_token(std::uint32_t module, const Bytes& token_hash,
                                   const SecureBuffer& passphrase) {
    wire::Request request;
    auto* body = request.mutable_load_token();
    body->set_module(module);
    body->set_token_hash(to_field(token_hash));
    const PassphraseField secret(body->mutable_passphrase(), passphrase);
    // On a PKCS#11 member a load is a login and the reading of the token's
    // objects, page by page, each an operation of the member, which its
    // fleet configuration lets take seconds: a plain request's timeout
    // would give up on a load that is under way.
    return handle_from(conn_->call(request, Body::kHandle, kTokenLoadTimeout));
}

void SimClient::change_passphrase(std::uint32_t module, const Bytes& token_hash,
                                  const SecureBuffer& passphrase, const SecureBuffer& fresh) {
    wire::Request request;
    auto* body = request.mutable_change_passphrase();
    body->set_module(module);
    body->set_token_hash(to_field(token_hash));
    const PassphraseField old_secret(body->mutable_passphrase(), passphrase);
    const PassphraseField new_secret(body->mutable_new_passphrase(), fresh);
    (void)conn_->call(request, Body::kOk);
}

ObjectHandle SimClient::load_key(std::uint32_t module, const std::string& ident,
                                 ObjectHandle token_handle) {
    wire::Request request;
    auto* body = request.mutable_load_key();
    body->set_module(module);
    body->set_ident(text(ident, "the key ident"));
    body->set_token_handle(token_handle);
    return handle_from(conn_->call(request, Body::kHandle));
}

std::vector<KeyLoadResult> SimClient::load_keys(std::uint32_t module,
                                                const std::vector<KeyToLoad>& keys) {
    constexpr std::size_t kPerRequest = 1024; // the service's limit (wire.proto)
    std::vector<KeyLoadResult> out;
    out.reserve(keys.size());
    for (std::size_t first = 0; first < keys.size(); first += kPerRequest) {
        const auto last = std::min(keys.size(), first + kPerRequest);
        wire::Request request;
        auto* body = request.mutable_load_keys();
        body->set_module(module);
        for (auto i = first; i < last; ++i) {
            auto* key = body->add_keys();
            key->set_ident(text(keys[i].ident, "the key ident"));
            key->set_token_handle(keys[i].token_handle);
        }
        const auto response = conn_->call(request, Body::kKeyLoads);
        const auto& results = response.key_loads().results();
        if (static_cast<std::size_t>(results.size()) != last - first) {
            throw Error(ErrorCode::protocol, "the HSM service answered " +
                                                 std::to_string(results.size()) + " results for " +
                                                 std::to_string(last - first) + " keys");
        }
        for (const auto& r : results) {
            KeyLoadResult result;
            if (r.has_error()) {
                result.error = codec::from_wire(r.error());
            } else if (r.handle() == 0) {
                throw Error(ErrorCode::protocol, "the HSM service returned object handle 0");
            } else {
                result.handle = r.handle();
            }
            out.push_back(std::move(result));
        }
    }
    return out;
}

void SimClient::unload(std::uint32_t module, ObjectHandle handle) {
    wire::Request request;
    auto* body = request.mutable_unload();
    body->set_module(module);
    body->set_handle(handle);
    conn_->call(request, Body::kOk);
}

GeneratedKey SimClient::generate_key(std::uint32_t module, const KeySpec& spec) {
    wire::Request request;
    auto* body = request.mutable_generate_key();
    body->set_module(module);
    body->set_type(codec::to_wire(spec.type));
    body->set_bits(spec.bits);
    body->set_label(text(spec.label, "the key label"));
    body->set_id(to_field(spec.id));
    body->set_persistent(spec.persistent);
    body->set_token_handle(spec.token_handle);
    body->set_refuse_duplicate(spec.refuse_duplicate);
    body->set_public_exponent(to_field(spec.public_exponent));
    const PassphraseField value(body->mutable_value(), spec.value);
    body->set_copy_of(spec.copy_of);
    body->set_extractable(spec.extractable);
    body->set_unwrap_with(spec.unwrap_with);
    if (spec.unwrap_with != 0) {
        *body->mutable_unwrap_mechanism() = codec::to_wire(spec.unwrap_mechanism);
    }
    // An RSA-4096 key takes seconds, more on a busy or real HSM, and it may
    // wait for its turn on the module: a plain request's timeout would give
    // up on a key that is still being made.
    const auto response = conn_->call(request, Body::kGenerated, kKeyGenerationTimeout);
    if (response.generated().handle() == 0) {
        throw Error(ErrorCode::protocol, "the HSM service returned object handle 0");
    }
    return {response.generated().handle(), codec::from_wire(response.generated().key())};
}

void SimClient::destroy_key(const std::string& ident, std::uint32_t module,
                            ObjectHandle token_handle) {
    wire::Request request;
    auto* body = request.mutable_destroy_key();
    body->set_ident(text(ident, "the key ident"));
    body->set_module(module);
    body->set_token_handle(token_handle);
    conn_->call(request, Body::kOk);
}

void SimClient::destroy_token(const Bytes& token_hash, std::uint32_t module,
                              ObjectHandle token_handle, bool with_keys) {
    wire::Request request;
    auto* body = request.mutable_destroy_token();
    body->set_token_hash(to_field(token_hash));
    body->set_module(module);
    body->set_token_handle(token_handle);
    body->set_with_keys(with_keys);
    conn_->call(request, Body::kOk);
}

Bytes SimClient::sign(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                      const Bytes& data) {
    wire::Request request;
    set_operation(request.mutable_sign(), module, key, mech, data);
    return from_field(conn_->call(request, Body::kData).data().data());
}

void SimClient::verify(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                       const Bytes& data, const Bytes& signature) {
    wire::Request request;
    auto* body = request.mutable_verify();
    set_operation(body, module, key, mech, data);
    body->set_signature(to_field(signature));
    conn_->call(request, Body::kOk);
}

Bytes SimClient::encrypt(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                         const Bytes& data) {
    wire::Request request;
    set_operation(request.mutable_encrypt(), module, key, mech, data);
    return from_field(conn_->call(request, Body::kData).data().data());
}

Bytes SimClient::decrypt(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                         const Bytes& data) {
    wire::Request request;
    set_operation(request.mutable_decrypt(), module, key, mech, data);
    return from_field(conn_->call(request, Body::kData).data().data());
}

Bytes SimClient::random(std::uint32_t module, std::uint32_t length) {
    wire::Request request;
    auto* body = request.mutable_random();
    body->set_module(module);
    body->set_length(length);
    return from_field(conn_->call(request, Body::kData).data().data());
}

Bytes SimClient::wrap_key(std::uint32_t module, ObjectHandle wrapping_key, const Mechanism& mech,
                          ObjectHandle key) {
    wire::Request request;
    auto* body = request.mutable_wrap_key();
    body->set_module(module);
    body->set_wrapping_key(wrapping_key);
    *body->mutable_mechanism() = codec::to_wire(mech);
    body->set_key(key);
    return from_field(conn_->call(request, Body::kData).data().data());
}

namespace {

wire::Request public_key_request(std::uint32_t module, const Bytes& public_key,
                                 const Mechanism& mech, const Bytes& data, bool encrypt) {
    wire::Request request;
    auto* body = request.mutable_public_key_operation();
    body->set_module(module);
    body->set_public_key(to_field(public_key));
    *body->mutable_mechanism() = codec::to_wire(mech);
    body->set_data(to_field(data));
    body->set_encrypt(encrypt);
    return request;
}

} // namespace

void SimClient::verify_public(std::uint32_t module, const Bytes& public_key, const Mechanism& mech,
                              const Bytes& data, const Bytes& signature) {
    auto request = public_key_request(module, public_key, mech, data, false);
    request.mutable_public_key_operation()->set_signature(to_field(signature));
    conn_->call(request, Body::kOk);
}

Bytes SimClient::encrypt_public(std::uint32_t module, const Bytes& public_key,
                                const Mechanism& mech, const Bytes& data) {
    auto request = public_key_request(module, public_key, mech, data, true);
    return from_field(conn_->call(request, Body::kData).data().data());
}

bool SimClient::usable() noexcept {
    return conn_ && conn_->usable();
}

std::unique_ptr<EventStream> SimClient::into_event_stream() {
    if (!conn_) {
        throw Error(ErrorCode::internal, "this connection already became an event stream");
    }
    return std::make_unique<SimEventStream>(std::move(conn_));
}

// ---- SimAdmin --------------------------------------------------------------------

SimAdmin::SimAdmin(const Endpoint& endpoint)
    : conn_(std::make_unique<Connection>(endpoint, kAdminVariable)) {}

SimAdmin::~SimAdmin() = default;

std::vector<ModuleInfo> SimAdmin::modules() {
    wire::Request request;
    request.mutable_list_modules();
    return list_from_wire<ModuleInfo>(conn_->call(request, Body::kModules).modules().modules());
}

ModuleInfo SimAdmin::control(std::uint32_t module, ModuleAction action) {
    wire::Request request;
    auto* body = request.mutable_control_module();
    body->set_module(module);
    body->set_action(action_to_wire(action));
    return codec::from_wire(conn_->call(request, Body::kModule).module());
}

ModuleInfo SimAdmin::add_module() {
    wire::Request request;
    request.mutable_add_module();
    return codec::from_wire(conn_->call(request, Body::kModule).module());
}

ModuleInfo SimAdmin::set_latency(std::uint32_t module, std::uint32_t latency_ms) {
    wire::Request request;
    auto* body = request.mutable_set_latency();
    body->set_module(module);
    body->set_latency_ms(latency_ms);
    return codec::from_wire(conn_->call(request, Body::kModule).module());
}

ModuleInfo SimAdmin::fail_next(std::uint32_t module, std::uint32_t count) {
    wire::Request request;
    auto* body = request.mutable_fail_next();
    body->set_module(module);
    body->set_count(count);
    return codec::from_wire(conn_->call(request, Body::kModule).module());
}

// ---- factories -------------------------------------------------------------------

std::unique_ptr<Service> connect(const Endpoint& endpoint) {
    return std::make_unique<SimClient>(endpoint);
}

std::unique_ptr<EventStream> subscribe(const Endpoint& endpoint) {
    return std::make_unique<SimEventStream>(
        std::make_unique<Connection>(endpoint, kClientVariable));
}

std::unique_ptr<EventStream> subscribe(std::unique_ptr<Service> connection,
                                       const Endpoint& endpoint) {
    auto* sim = dynamic_cast<SimClient*>(connection.get());
    if (sim != nullptr && sim->usable()) {
        return sim->into_event_stream();
    }
    return subscribe(endpoint);
}

} // namespace preloadrun::hsm
