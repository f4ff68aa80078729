// Writes the seed corpus of fuzz_wire_decode: a few valid framed messages
// (and two unframed ones) into the directory given as argument.
//   build/fuzz/fuzz/make_wire_corpus fuzz/corpus/wire

#include "preloadrun/common/files.hpp"
#include "wire/codec.hpp"
#include "wire/frame.hpp"

#include <cstdio>
#include <filesystem>

namespace {

namespace codec = preloadrun::hsm::codec;
namespace hsm = preloadrun::hsm;
namespace wire = preloadrun::wire;
using preloadrun::Bytes;

Bytes framed(std::initializer_list<Bytes> messages) {
    Bytes out;
    for (const auto& m : messages) {
        const Bytes frame = hsm::encode_frame(m);
        out.insert(out.end(), frame.begin(), frame.end());
    }
    return out;
}

Bytes server(const wire::Response& response) {
    wire::ServerMessage message;
    *message.mutable_response() = response;
    return codec::encode(message);
}

hsm::ModuleInfo module(std::uint32_t number) {
    hsm::ModuleInfo info;
    info.number = number;
    info.esn = "5A1C-83F2-0B1" + std::to_string(number);
    info.state = hsm::ModuleState::usable;
    info.generation = 3;
    info.latency_ms = 5;
    info.ops = 100;
    return info;
}

} // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: make_wire_corpus DIR\n");
        return 2;
    }
    const std::filesystem::path dir = argv[1];
    std::filesystem::create_directories(dir);
    auto write = [&](const char* name, const Bytes& bytes) {
        preloadrun::write_file_atomic(dir / name, bytes, {0644, false});
    };

    wire::Request hello;
    hello.set_id(1);
    hello.mutable_hello()->set_version(codec::kProtocolVersion);
    hello.mutable_hello()->set_client("preloadrun 0.1.0");
    wire::Request list;
    list.set_id(2);
    list.mutable_list_modules();
    write("request-hello-list", framed({codec::encode(hello), codec::encode(list)}));

    wire::Request load;
    load.set_id(3);
    load.mutable_load_token()->set_module(1);
    load.mutable_load_token()->set_token_hash(std::string(hsm::kTokenHashSize, '\x11'));
    load.mutable_load_token()->set_passphrase("passphrase");
    write("request-load-token", framed({codec::encode(load)}));

    wire::Request sign;
    sign.set_id(4);
    hsm::Mechanism mech;
    mech.kind = hsm::MechanismKind::rsa_pss;
    mech.hash = hsm::Hash::sha256;
    mech.mgf_hash = hsm::Hash::sha256;
    mech.salt_len = 32;
    sign.mutable_sign()->set_module(2);
    sign.mutable_sign()->set_handle(77);
    *sign.mutable_sign()->mutable_mechanism() = codec::to_wire(mech);
    sign.mutable_sign()->set_data(std::string(32, '\xd1'));
    write("request-sign", framed({codec::encode(sign)}));
    write("raw-request-sign", codec::encode(sign));

    wire::Request control;
    control.set_id(5);
    control.mutable_control_module()->set_module(2);
    control.mutable_control_module()->set_action(wire::MODULE_CLEAR);
    write("request-control", framed({codec::encode(control)}));

    wire::Request destroy;
    destroy.set_id(6);
    destroy.mutable_destroy_key()->set_ident(std::string(40, 'a'));
    destroy.mutable_destroy_key()->set_module(1);
    destroy.mutable_destroy_key()->set_token_handle(12);
    wire::Request page;
    page.set_id(7);
    page.mutable_list_keys()->set_after(std::string(40, 'b'));
    write("request-destroy-list-keys", framed({codec::encode(destroy), codec::encode(page)}));

    wire::Response hello_reply;
    hello_reply.set_id(1);
    hello_reply.mutable_hello()->set_version(codec::kProtocolVersion);
    hello_reply.mutable_hello()->set_server("hsmsim 0.1.0");
    hello_reply.mutable_hello()->set_world_id(std::string(16, '\x5a'));
    hello_reply.mutable_hello()->set_instance(std::string(16, '\x3c'));
    wire::Response modules;
    modules.set_id(2);
    *modules.mutable_modules()->add_modules() = codec::to_wire(module(1));
    *modules.mutable_modules()->add_modules() = codec::to_wire(module(2));
    write("server-hello-modules", framed({server(hello_reply), server(modules)}));

    hsm::KeyInfo key;
    key.ident = "9f2c";
    key.label = "web";
    key.id = {1, 2};
    key.type = hsm::KeyType::ec_p256;
    key.bits = 256;
    key.token = hsm::TokenInfo{hsm::TokenType::softcard, "", Bytes(hsm::kTokenHashSize, 0x22)};
    key.public_der = Bytes(91, 0x30);
    wire::Response keys;
    keys.set_id(3);
    *keys.mutable_keys()->add_keys() = codec::to_wire(key);
    keys.mutable_keys()->set_next(std::string(40, 'c'));
    write("server-keys", framed({server(keys)}));

    write(
        "server-error",
        framed({server(codec::error_response(
            4, preloadrun::Error(preloadrun::ErrorCode::wrong_passphrase, "wrong passphrase")))}));

    wire::ServerMessage event;
    hsm::ModuleEvent e;
    e.sequence = 1;
    e.module = module(2);
    e.previous_state = hsm::ModuleState::failed;
    e.previous_generation = 2;
    *event.mutable_event() = codec::to_wire(e);
    write("server-events", framed({codec::encode(event), codec::encode(event)}));
    write("raw-server-event", codec::encode(event));
    return 0;
}
