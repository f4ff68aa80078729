#include "sim/server/handler.hpp"

#include "preloadrun/common/log.hpp"
#include "preloadrun/hsm/codec.hpp"
#include "preloadrun/version.hpp"
#include "sim/server/validation.hpp"

#include <openssl/crypto.h>

namespace preloadrun::sim {

namespace {

using wire::Request;
using wire::Response;

std::string to_field(const Bytes& bytes) {
    return std::string(bytes.begin(), bytes.end());
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
    default:
        throw Error(ErrorCode::usage, "module action must be clear, fail, restore or remove");
    }
}

void set_modules(Response& response, const std::vector<hsm::ModuleInfo>& modules) {
    auto* list = response.mutable_modules();
    for (const auto& m : modules) {
        *list->add_modules() = hsm::codec::to_wire(m);
    }
}

void set_data(Response& response, const Bytes& data) {
    response.mutable_data()->set_data(to_field(data));
}

void wipe(std::string* s) {
    if (!s->empty()) {
        OPENSSL_cleanse(s->data(), s->size());
    }
    s->clear();
}

} // namespace

std::string server_name() {
    return std::string("hsmsim ") + kVersion;
}

bool is_admin_request(const Request& request) {
    switch (request.body_case()) {
    case Request::kControlModule:
    case Request::kAddModule:
    case Request::kSetLatency:
    case Request::kFailNext:
        return true;
    default:
        return false;
    }
}

std::string_view request_name(const Request& request) {
    switch (request.body_case()) {
    case Request::kHello:
        return "Hello";
    case Request::kListModules:
        return "ListModules";
    case Request::kGetWorld:
        return "GetWorld";
    case Request::kListTokens:
        return "ListTokens";
    case Request::kListKeys:
        return "ListKeys";
    case Request::kCreateToken:
        return "CreateToken";
    case Request::kLoadToken:
        return "LoadToken";
    case Request::kLoadKey:
        return "LoadKey";
    case Request::kUnload:
        return "Unload";
    case Request::kGenerateKey:
        return "GenerateKey";
    case Request::kDestroyKey:
        return "DestroyKey";
    case Request::kDestroyToken:
        return "DestroyToken";
    case Request::kSign:
        return "Sign";
    case Request::kVerify:
        return "Verify";
    case Request::kEncrypt:
        return "Encrypt";
    case Request::kDecrypt:
        return "Decrypt";
    case Request::kRandom:
        return "Random";
    case Request::kSubscribe:
        return "Subscribe";
    case Request::kControlModule:
        return "ControlModule";
    case Request::kAddModule:
        return "AddModule";
    case Request::kSetLatency:
        return "SetLatency";
    case Request::kFailNext:
        return "FailNext";
    case Request::BODY_NOT_SET:
        break;
    }
    return "(empty request)";
}

void wipe_secrets(Request& request) {
    if (request.has_create_token()) {
        wipe(request.mutable_create_token()->mutable_passphrase());
    }
    if (request.has_load_token()) {
        wipe(request.mutable_load_token()->mutable_passphrase());
    }
}

wire::Response Handler::handle(const Request& request, const Peer& peer) {
    try {
        auto response = dispatch(request, peer);
        response.set_id(request.id());
        return response;
    } catch (const Error& e) {
        log::get("sim.handler")
            ->debug("{} from uid {} pid {} failed: {}", request_name(request), peer.uid, peer.pid,
                    e.what());
        return hsm::codec::error_response(request.id(), e);
    } catch (const std::exception& e) {
        // A library failure (out of memory, ...): still one answer per request.
        log::get("sim.handler")
            ->error("{} failed unexpectedly: {}", request_name(request), e.what());
        return hsm::codec::error_response(
            request.id(), Error(ErrorCode::internal, std::string("internal error: ") + e.what()));
    }
}

Clients::Lease Handler::attach(Peer& peer) {
    auto lease = clients_.connect(peer.uid, peer.pid);
    peer.client = lease.client();
    return lease;
}

void Handler::client_gone(const Clients::Client& client) {
    if (stopping_.load(std::memory_order_acquire)) {
        return;
    }
    const auto unloaded = fleet_.unload_client(client.id);
    log::get("sim.service")
        ->log(unloaded == 0 ? spdlog::level::debug : spdlog::level::info,
              "client pid {} (uid {}) has gone: unloaded {} object(s)", client.pid, client.uid,
              unloaded);
}

std::pair<wire::Response, Fleet::Subscription> Handler::subscribe(const Request& request,
                                                                  Fleet::Listener listener) {
    auto [snapshot, subscription] = fleet_.subscribe(std::move(listener));
    Response response;
    response.set_id(request.id());
    set_modules(response, snapshot);
    return {std::move(response), std::move(subscription)};
}

std::uint32_t Handler::module_number(std::uint32_t number) const {
    return validate::module_number(number, fleet_.size());
}

wire::Response Handler::dispatch(const Request& request, const Peer& peer) {
    if (is_admin_request(request) && !peer.admin) {
        throw Error(ErrorCode::permission,
                    std::string(request_name(request)) +
                        " is an admin request: send it on the admin socket (HSMSIM_ADMIN_SOCKET)");
    }
    Response out;
    switch (request.body_case()) {
    case Request::kHello: {
        const auto& hello = request.hello();
        if (hello.version() != hsm::codec::kProtocolVersion) {
            throw Error(ErrorCode::protocol, "client speaks protocol version " +
                                                 std::to_string(hello.version()) + ", " +
                                                 server_name() + " speaks version " +
                                                 std::to_string(hsm::codec::kProtocolVersion) +
                                                 ": upgrade the older one");
        }
        auto* reply = out.mutable_hello();
        reply->set_version(hsm::codec::kProtocolVersion);
        reply->set_server(server_name());
        reply->set_world_id(to_field(world_.id()));
        reply->set_instance(to_field(fleet_.instance()));
        break;
    }
    case Request::kListModules:
        set_modules(out, fleet_.list());
        break;
    case Request::kGetWorld: {
        auto* world = out.mutable_world();
        world->set_world_id(to_field(world_.id()));
        world->set_modules(fleet_.size());
        break;
    }
    case Request::kListTokens:
        *out.mutable_tokens() =
            token_page(world_, validate::token_cursor(request.list_tokens().after()), pages_);
        break;
    case Request::kListKeys:
        *out.mutable_keys() =
            key_page(world_, validate::key_cursor(request.list_keys().after()), pages_);
        break;
    case Request::kCreateToken: {
        const auto& r = request.create_token();
        auto type = validate::token_type(r.type());
        const auto& name = validate::token_name(r.name());
        auto passphrase = validate::passphrase(r.passphrase(), true);
        *out.mutable_token() =
            hsm::codec::to_wire(world_.create_token(type, name, passphrase, peer.uid));
        break;
    }
    case Request::kLoadToken: {
        const auto& r = request.load_token();
        auto module = module_number(r.module());
        auto hash = validate::token_hash(r.token_hash());
        auto passphrase = validate::passphrase(r.passphrase(), false);
        out.mutable_handle()->set_handle(
            engine_.load_token(module, hash, passphrase, peer.uid, peer.client));
        clients_.note_loaded(peer.pid, peer.client);
        break;
    }
    case Request::kLoadKey: {
        const auto& r = request.load_key();
        auto module = module_number(r.module());
        const auto& ident = validate::ident(r.ident());
        out.mutable_handle()->set_handle(
            engine_.load_key(module, ident, r.token_handle(), peer.uid, peer.client));
        clients_.note_loaded(peer.pid, peer.client);
        break;
    }
    case Request::kUnload: {
        const auto& r = request.unload();
        engine_.unload(module_number(r.module()), r.handle(), peer.uid);
        out.mutable_ok();
        break;
    }
    case Request::kGenerateKey: {
        const auto& r = request.generate_key();
        auto module = module_number(r.module());
        auto spec = validate::key_spec(r);
        auto generated = engine_.generate_key(module, spec, peer.uid, peer.client);
        clients_.note_loaded(peer.pid, peer.client);
        auto* body = out.mutable_generated();
        body->set_handle(generated.handle);
        *body->mutable_key() = hsm::codec::to_wire(generated.key);
        break;
    }
    case Request::kDestroyKey: {
        const auto& r = request.destroy_key();
        const auto& ident = validate::ident(r.ident());
        // The module matters only with a token handle (a module-protected key).
        auto module = r.token_handle() == 0 ? r.module() : module_number(r.module());
        engine_.destroy_key(module, ident, r.token_handle(), peer.uid);
        out.mutable_ok();
        break;
    }
    case Request::kDestroyToken: {
        const auto& r = request.destroy_token();
        auto hash = validate::token_hash(r.token_hash());
        // The module matters only with a token handle (else: permission).
        auto module = r.token_handle() == 0 ? r.module() : module_number(r.module());
        engine_.destroy_token(module, hash, r.token_handle(), r.with_keys(), peer.uid);
        out.mutable_ok();
        break;
    }
    case Request::kSign: {
        const auto& r = request.sign();
        auto module = module_number(r.module());
        auto mech = validate::mechanism(r.mechanism());
        set_data(out, engine_.sign(module, r.handle(), mech,
                                   Bytes(r.data().begin(), r.data().end()), peer.uid));
        break;
    }
    case Request::kVerify: {
        const auto& r = request.verify();
        auto module = module_number(r.module());
        auto mech = validate::mechanism(r.mechanism());
        engine_.verify(module, r.handle(), mech, Bytes(r.data().begin(), r.data().end()),
                       Bytes(r.signature().begin(), r.signature().end()), peer.uid);
        out.mutable_ok();
        break;
    }
    case Request::kEncrypt: {
        const auto& r = request.encrypt();
        auto module = module_number(r.module());
        auto mech = validate::mechanism(r.mechanism());
        set_data(out, engine_.encrypt(module, r.handle(), mech,
                                      Bytes(r.data().begin(), r.data().end()), peer.uid));
        break;
    }
    case Request::kDecrypt: {
        const auto& r = request.decrypt();
        auto module = module_number(r.module());
        auto mech = validate::mechanism(r.mechanism());
        set_data(out, engine_.decrypt(module, r.handle(), mech,
                                      Bytes(r.data().begin(), r.data().end()), peer.uid));
        break;
    }
    case Request::kRandom: {
        const auto& r = request.random();
        auto module = module_number(r.module());
        set_data(out, engine_.random(module, validate::random_length(r.length()), peer.uid));
        break;
    }
    case Request::kSubscribe:
        throw Error(ErrorCode::internal, "Subscribe reached the plain request handler");
    case Request::kControlModule: {
        const auto& r = request.control_module();
        auto module = module_number(r.module());
        *out.mutable_module() = hsm::codec::to_wire(fleet_.control(module, action_of(r.action())));
        break;
    }
    case Request::kAddModule:
        *out.mutable_module() = hsm::codec::to_wire(fleet_.add());
        break;
    case Request::kSetLatency: {
        const auto& r = request.set_latency();
        if (r.latency_ms() > 60000) {
            throw Error(ErrorCode::usage, "latency at most 60000 ms");
        }
        *out.mutable_module() =
            hsm::codec::to_wire(fleet_.set_latency(module_number(r.module()), r.latency_ms()));
        break;
    }
    case Request::kFailNext: {
        const auto& r = request.fail_next();
        *out.mutable_module() =
            hsm::codec::to_wire(fleet_.fail_next(module_number(r.module()), r.count()));
        break;
    }
    case Request::BODY_NOT_SET:
        throw Error(ErrorCode::protocol, "request without a body");
    }
    return out;
}

} // namespace preloadrun::sim
