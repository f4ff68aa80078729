#include "fake_module.hpp"
#include "handler_test_util.hpp"
#include "wire/codec.hpp"

#include <doctest/doctest.h>

using namespace handlertest;

TEST_CASE("sim::Handler Hello") {
    Setup s;
    wire::Request r;
    r.mutable_hello()->set_version(hsm::codec::kProtocolVersion);
    r.mutable_hello()->set_client("test");
    auto ok = s.call(r);
    REQUIRE(ok.has_hello());
    CHECK(ok.hello().version() == hsm::codec::kProtocolVersion);
    CHECK(ok.hello().server().starts_with("hsmsim "));
    CHECK(ok.hello().world_id() == field(s.world->id()));
    r.mutable_hello()->set_version(99);
    auto bad = s.call(r);
    CHECK(error_of(bad) == wire::ERROR_PROTOCOL);
    CHECK(bad.error().message().find("99") != std::string::npos);
}

TEST_CASE("sim::Handler world and lists") {
    Setup s;
    wire::Request r;
    r.mutable_get_world();
    auto world = s.call(r);
    REQUIRE(world.has_world());
    CHECK(world.world().modules() == 2);
    r.mutable_list_modules();
    auto modules = s.call(r, kAdmin); // lists work on both sockets
    REQUIRE(modules.has_modules());
    CHECK(modules.modules().modules_size() == 2);
    CHECK(modules.modules().modules(1).number() == 2);
    r.mutable_list_tokens();
    CHECK(s.call(r).tokens().tokens_size() == 0);
    r.mutable_list_keys();
    CHECK(s.call(r).keys().keys_size() == 0);
}

TEST_CASE("sim::Handler admin requests only on the admin socket") {
    Setup s;
    std::vector<wire::Request> admin(4);
    admin[0].mutable_control_module()->set_module(1);
    admin[0].mutable_control_module()->set_action(wire::MODULE_FAIL);
    admin[1].mutable_add_module();
    admin[2].mutable_set_latency()->set_module(1);
    admin[3].mutable_fail_next()->set_module(1);
    for (auto& r : admin) {
        auto refused = s.call(r, kClient);
        CHECK(error_of(refused) == wire::ERROR_PERMISSION);
        CHECK(refused.error().message().find("admin socket") != std::string::npos);
    }
    CHECK(s.fleet->info(1).state == hsm::ModuleState::usable);
    CHECK(s.fleet->size() == 2);
    for (auto& r : admin) {
        auto done = s.call(r, kAdmin);
        CHECK(done.has_module());
    }
    CHECK(s.fleet->info(1).state == hsm::ModuleState::failed);
    CHECK(s.fleet->size() == 3);
    SUBCASE("refused transitions are conflicts, an unknown action a bad request") {
        wire::Request clear;
        clear.mutable_control_module()->set_module(1);
        clear.mutable_control_module()->set_action(wire::MODULE_CLEAR);
        CHECK(error_of(s.call(clear, kAdmin)) == wire::ERROR_CONFLICT);
        clear.mutable_control_module()->set_action(wire::MODULE_ACTION_UNSPECIFIED);
        CHECK(error_of(s.call(clear, kAdmin)) == wire::ERROR_BAD_REQUEST);
    }
}

TEST_CASE("sim::Handler validates every field") {
    Setup s;
    auto bad = [&](wire::Request r) {
        auto response = s.call(std::move(r));
        CHECK(error_of(response) == wire::ERROR_BAD_REQUEST);
        return response.error().message();
    };
    auto unknown_module = [&](wire::Request r) {
        auto response = s.call(std::move(r));
        CHECK(error_of(response) == wire::ERROR_NOT_FOUND);
        return response.error().message();
    };
    wire::Request r;
    r.mutable_random()->set_module(0);
    CHECK(unknown_module(r).find("modules are 1..2") != std::string::npos);
    r.mutable_random()->set_module(3);
    unknown_module(r);
    r.mutable_random()->set_module(1);
    r.mutable_random()->set_length(65537);
    CHECK(bad(r).find("65536") != std::string::npos);
    r.mutable_random()->set_length(65536);
    CHECK(s.call(r).data().data().size() == 65536);

    wire::Request create;
    auto* c = create.mutable_create_token();
    c->set_type(wire::TOKEN_SOFTCARD);
    c->set_passphrase("pw");
    for (const char* name : {"", "has space", "slash/", "x\n"}) {
        c->set_name(name);
        CHECK(bad(create).find("token name") != std::string::npos);
    }
    c->set_name(std::string(65, 'a'));
    bad(create);
    c->set_name("ok");
    c->set_type(wire::TOKEN_TYPE_UNSPECIFIED);
    bad(create);
    c->set_type(wire::TOKEN_SOFTCARD);
    c->set_passphrase("");
    bad(create);
    c->set_passphrase("pw");
    auto created = s.call(create);
    REQUIRE(created.has_token());
    CHECK(created.token().name() == "ok");
    CHECK(error_of(s.call(create)) == wire::ERROR_ALREADY_EXISTS);

    wire::Request gen;
    auto* g = gen.mutable_generate_key();
    g->set_module(1);
    g->set_type(wire::KEY_RSA);
    g->set_bits(1000);
    CHECK(bad(gen).find("RSA key size") != std::string::npos);
    g->set_type(wire::KEY_AES);
    g->set_bits(100);
    bad(gen);
    g->set_type(wire::KEY_TYPE_UNSPECIFIED);
    bad(gen);
    g->set_type(wire::KEY_EC_P256);
    g->set_bits(0);
    g->set_label(std::string(257, 'l'));
    CHECK(bad(gen).find("label") != std::string::npos);
    g->set_label(std::string(256, 'l'));
    g->set_id(std::string(257, 'i'));
    CHECK(bad(gen).find("id") != std::string::npos);
    g->set_id("id");
    auto generated = s.call(gen);
    REQUIRE(generated.has_generated());
    CHECK(generated.generated().key().bits() == 256);

    wire::Request load;
    load.mutable_load_token()->set_module(1);
    load.mutable_load_token()->set_token_hash("short");
    bad(load);
    wire::Request load_key;
    load_key.mutable_load_key()->set_module(1);
    load_key.mutable_load_key()->set_ident("../../etc/passwd");
    bad(load_key);
    wire::Request destroy;
    destroy.mutable_destroy_key()->set_ident("ABC");
    bad(destroy);

    wire::Request sign;
    sign.mutable_sign()->set_module(1);
    sign.mutable_sign()->set_handle(generated.generated().handle());
    sign.mutable_sign()->set_data(std::string(32, 'd'));
    CHECK(bad(sign).find("mechanism") != std::string::npos);
    sign.mutable_sign()->mutable_mechanism()->set_kind(wire::MECH_ECDSA);
    sign.mutable_sign()->mutable_mechanism()->set_hash(static_cast<wire::Hash>(77));
    bad(sign);
    sign.mutable_sign()->mutable_mechanism()->set_hash(wire::HASH_SHA256);
    CHECK(s.call(sign).data().data().size() == 64);

    wire::Request latency;
    latency.mutable_set_latency()->set_module(1);
    latency.mutable_set_latency()->set_latency_ms(600000);
    CHECK(error_of(s.call(latency, kAdmin)) == wire::ERROR_BAD_REQUEST);
}

TEST_CASE("sim::Handler a whole session: token, key, sign, verify, errors") {
    Setup s;
    wire::Request create;
    create.mutable_create_token()->set_type(wire::TOKEN_SOFTCARD);
    create.mutable_create_token()->set_name("card");
    create.mutable_create_token()->set_passphrase("pw");
    auto hash = s.call(create).token().hash();
    REQUIRE(hash.size() == 20);

    wire::Request load;
    load.mutable_load_token()->set_module(2);
    load.mutable_load_token()->set_token_hash(hash);
    load.mutable_load_token()->set_passphrase("wrong");
    CHECK(error_of(s.call(load)) == wire::ERROR_WRONG_PASSPHRASE);
    load.mutable_load_token()->set_passphrase("pw");
    auto token = s.call(load).handle().handle();
    CHECK(token != 0);

    wire::Request gen;
    gen.mutable_generate_key()->set_module(2);
    gen.mutable_generate_key()->set_type(wire::KEY_EC_P384);
    gen.mutable_generate_key()->set_label("k");
    gen.mutable_generate_key()->set_persistent(true);
    gen.mutable_generate_key()->set_token_handle(token);
    auto generated = s.call(gen).generated();
    CHECK(generated.key().token_hash() == hash);
    CHECK(generated.key().token_type() == wire::TOKEN_SOFTCARD);

    wire::Request list;
    list.mutable_list_keys();
    auto keys = s.call(list).keys();
    REQUIRE(keys.keys_size() == 1);
    CHECK(keys.keys(0).ident() == generated.key().ident());

    Bytes digest = simtest::digest(hsm::Hash::sha384, to_bytes("msg"));
    wire::Request sign;
    sign.mutable_sign()->set_module(2);
    sign.mutable_sign()->set_handle(generated.handle());
    sign.mutable_sign()->mutable_mechanism()->set_kind(wire::MECH_ECDSA);
    sign.mutable_sign()->set_data(field(digest));
    auto sig = s.call(sign).data().data();
    CHECK(sig.size() == 96);
    const auto& pub = generated.key().public_der();
    CHECK(simtest::openssl_verify_ecdsa_raw(Bytes(pub.begin(), pub.end()), digest,
                                            Bytes(sig.begin(), sig.end())));

    wire::Request verify;
    auto* v = verify.mutable_verify();
    v->set_module(2);
    v->set_handle(generated.handle());
    v->mutable_mechanism()->set_kind(wire::MECH_ECDSA);
    v->set_data(field(digest));
    v->set_signature(sig);
    CHECK(s.call(verify).has_ok());
    sig[3] = static_cast<char>(sig[3] ^ 1);
    v->set_signature(sig);
    CHECK(error_of(s.call(verify)) == wire::ERROR_BAD_SIGNATURE);

    Peer stranger{2000, 7, false};
    CHECK(error_of(s.call(sign, stranger)) == wire::ERROR_PERMISSION);
    sign.mutable_sign()->set_handle(999);
    CHECK(error_of(s.call(sign)) == wire::ERROR_INVALID_HANDLE);

    wire::Request clear;
    clear.mutable_control_module()->set_module(2);
    clear.mutable_control_module()->set_action(wire::MODULE_CLEAR);
    CHECK(s.call(clear, kAdmin).module().generation() == 1);
    sign.mutable_sign()->set_handle(generated.handle());
    auto not_usable = s.call(sign);
    CHECK(error_of(not_usable) == wire::ERROR_MODULE_NOT_USABLE);
    CHECK(not_usable.error().message().find("initialising") != std::string::npos);
}

TEST_CASE("sim::Handler subscribe answers with the module snapshot") {
    Setup s;
    wire::Request r;
    r.set_id(5);
    r.mutable_subscribe();
    std::vector<FleetEvent> events;
    auto [response, subscription] =
        s.handler->subscribe(r, [&](const FleetEvent& e) { events.push_back(e); });
    CHECK(response.id() == 5);
    REQUIRE(response.has_modules());
    CHECK(response.modules().modules_size() == 2);
    s.fleet->control(1, hsm::ModuleAction::fail);
    REQUIRE(events.size() == 1);
    CHECK(events[0].event.module.state == hsm::ModuleState::failed);
    // Subscribe through handle() is a bug in the caller, reported, not thrown.
    CHECK(error_of(s.call(r)) == wire::ERROR_INTERNAL);
}

TEST_CASE("sim::Handler GenerateKey refuses a duplicate only when asked") {
    Setup s;
    As victim{s, kVictim};
    const auto card = victim.create_token("victim", "victim-pw");
    const auto handle = victim.load_token(1, card, "victim-pw");
    REQUIRE(victim.generate_response(handle, 1, "signer", true).has_generated());
    auto refused = victim.generate_response(handle, 1, "signer", true);
    CHECK(error_of(refused) == wire::ERROR_ALREADY_EXISTS);
    CHECK(refused.error().message().find("already has the label 'signer'") != std::string::npos);
    // Under another protection, or not asked: made.
    CHECK(victim.generate_response(0, 1, "signer", true).has_generated());
    CHECK(victim.generate_response(handle, 1, "signer", false).has_generated());
}

TEST_CASE("sim::Handler lists keys and tokens in pages") {
    Setup s(PageLimits{512 * 1024, 2});
    As victim{s, kVictim};
    auto list_keys = [&](const std::string& after) {
        wire::Request r;
        r.mutable_list_keys()->set_after(after);
        auto out = s.call(r);
        REQUIRE(out.has_keys());
        return out.keys();
    };

    SUBCASE("an empty world: one empty page") {
        auto page = list_keys("");
        CHECK(page.keys_size() == 0);
        CHECK(page.next().empty());
    }
    SUBCASE("pages follow the cursor to the end, each key once, in ident order") {
        std::vector<std::string> made;
        for (int i = 0; i < 5; ++i) {
            made.push_back(victim.generate(0));
        }
        std::sort(made.begin(), made.end());
        std::vector<std::string> seen;
        std::string after;
        int pages = 0;
        do {
            auto page = list_keys(after);
            ++pages;
            CHECK(page.keys_size() <= 2);
            for (const auto& k : page.keys()) {
                seen.push_back(k.ident());
            }
            if (!page.next().empty()) {
                CHECK(page.next() == seen.back());
            }
            after = page.next();
        } while (!after.empty() && pages < 10);
        CHECK(pages == 3);
        CHECK(seen == made);
    }
    SUBCASE("a full last page says there is no next one") {
        for (int i = 0; i < 4; ++i) {
            victim.generate(0);
        }
        auto first = list_keys("");
        REQUIRE_FALSE(first.next().empty());
        auto last = list_keys(first.next());
        CHECK(last.keys_size() == 2);
        CHECK(last.next().empty());
    }
    SUBCASE("tokens too") {
        for (const char* name : {"a", "b", "c"}) {
            victim.create_token(name, "pw");
        }
        wire::Request r;
        r.mutable_list_tokens();
        auto first = s.call(r).tokens();
        CHECK(first.tokens_size() == 2);
        REQUIRE_FALSE(first.next().empty());
        r.mutable_list_tokens()->set_after(first.next());
        auto second = s.call(r).tokens();
        CHECK(second.tokens_size() == 1);
        CHECK(second.next().empty());
    }
    SUBCASE("a cursor that is not an ident or hash is a bad request") {
        wire::Request r;
        r.mutable_list_keys()->set_after("../../etc");
        CHECK(error_of(s.call(r)) == wire::ERROR_BAD_REQUEST);
        r.mutable_list_tokens()->set_after("ABC");
        CHECK(error_of(s.call(r)) == wire::ERROR_BAD_REQUEST);
    }
}

TEST_CASE("sim::Handler records the creator and enforces quotas per uid") {
    testsupport::TempDir tmp;
    WorldLimits limits;
    limits.max_keys_per_uid = 1;
    World world(simtest::world_options(tmp.path(), limits));
    world.enrol_module();
    SimulatedModules sims(world);
    Fleet fleet(world, FleetOptions{0, 0, {}}, sims.factory());
    Destroyer destroyer(world, fleet, kServiceUid);
    Handler handler(world, fleet, &destroyer);
    wire::Request gen;
    gen.mutable_generate_key()->set_module(1);
    gen.mutable_generate_key()->set_type(wire::KEY_EC_P256);
    gen.mutable_generate_key()->set_persistent(true);
    auto first = handler.handle(gen, kAttacker);
    REQUIRE(first.has_generated());
    CHECK(world.key_record(first.generated().key().ident()).creator ==
          std::optional<uid_t>(kAttacker.uid));
    auto refused = handler.handle(gen, kAttacker);
    CHECK(error_of(refused) == wire::ERROR_LIMIT);
    CHECK(refused.error().message().find("--max-keys-per-uid") != std::string::npos);
    CHECK(handler.handle(gen, kVictim).has_generated());
    gen.mutable_generate_key()->set_persistent(false); // session keys are not counted
    CHECK(handler.handle(gen, kAttacker).has_generated());
}

TEST_CASE("sim::Handler what a process loaded goes when its last connection closes") {
    ObjectLimits objects;
    objects.per_uid = 4;
    Setup s({}, objects);
    Peer a{1000, 42, false};       // preloadrun
    Peer a_again{1000, 42, false}; // another connection of the same process
    Peer b{1000, 43, false};       // the application: same uid, another process
    Peer c{2000, 44, false};       // another user
    auto a1 = s.handler->attach(a);
    auto a2 = s.handler->attach(a_again);
    auto b1 = s.handler->attach(b);
    auto c1 = s.handler->attach(c);
    REQUIRE(a.client != kNoClient);
    CHECK(a_again.client == a.client);
    CHECK(b.client != a.client);
    CHECK(s.handler->clients().connections(42) == 2);
    auto objects_on = [&](std::uint32_t m) { return s.fleet->info(m).objects; };

    As pa{s, a};
    As pb{s, b};
    As pc{s, c};
    const auto hash = pa.create_token("card", "pw");
    const auto token1 = pa.load_token(1, hash, "pw");
    CHECK(As{s, a_again}.load_token(2, hash, "pw") != 0);
    // A module-protected key, and a key the application loads under the token.
    const auto world_key = pa.generate_key(0, 1);
    const auto app_key = pb.generate(token1, 1);
    REQUIRE(pb.load_key(1, app_key, token1).has_handle());
    const auto strangers = pc.create_token("theirs", "pw2");
    pc.load_token(1, strangers, "pw2");
    REQUIRE(objects_on(1) == 5); // token, world key, app key twice, the stranger's token
    REQUIRE(objects_on(2) == 1);
    CHECK(s.fleet->module(1).held_by(1000) == 4);
    CHECK(pb.load_token_response(2, hash, "pw").has_handle());
    // The application uses what preloadrun loaded.
    CHECK(pb.sign(1, world_key.handle()).has_data());

    a1.release();
    CHECK(s.handler->clients().connections(42) == 1);
    CHECK(objects_on(1) == 5);
    CHECK(pb.sign(1, world_key.handle()).has_data());

    a2.release();
    CHECK(s.handler->clients().connections(42) == 0);
    // Preloadrun's token and key went, with the keys loaded under that token;
    // the application's own token on module 2 and the stranger's token stay.
    CHECK(objects_on(1) == 1);
    CHECK(objects_on(2) == 1);
    CHECK(s.fleet->module(1).held_by(1000) == 0);
    CHECK(s.fleet->module(1).held_by(2000) == 1);
    CHECK(error_of(pb.sign(1, world_key.handle())) == wire::ERROR_INVALID_HANDLE);
    // The uid's share on module 1 is free again: four loads fit.
    for (int i = 0; i < 4; ++i) {
        CHECK(pb.load_token(1, hash, "pw") != 0);
    }
    CHECK(error_of(pb.load_token_response(1, hash, "pw")) == wire::ERROR_LIMIT);

    SUBCASE("a process that connects again is a new client: nothing of it went") {
        Peer back{1000, 42, false};
        auto again = s.handler->attach(back);
        CHECK(back.client != a.client);
        CHECK(As{s, back}.load_token(2, hash, "pw") != 0);
        again.release();
        CHECK(objects_on(2) == 1);
    }
    SUBCASE("the others go when their last connection closes") {
        b1.release();
        CHECK(objects_on(1) == 1);
        CHECK(objects_on(2) == 0);
        c1.release();
        CHECK(objects_on(1) == 0);
    }
}

TEST_CASE("sim::Handler serves modules of another kind and passes their module errors on") {
    testsupport::TempDir tmp;
    auto world = simtest::make_world(tmp.path());
    world->enrol_module();
    simtest::FakeModules fakes;
    // A long initialisation delay: a cleared module stays initialising.
    Fleet fleet(*world, FleetOptions{0, 60000, {}}, fakes.factory());
    Destroyer destroyer(*world, fleet, kServiceUid);
    Handler handler(*world, fleet, &destroyer);
    Peer peer{1000, 42, false};
    auto lease = handler.attach(peer);

    wire::Request load;
    load.mutable_load_token()->set_module(1);
    load.mutable_load_token()->set_token_hash(std::string(hsm::kTokenHashSize, 'h'));
    load.mutable_load_token()->set_passphrase("the PIN");
    const auto loaded = handler.handle(load, peer);
    REQUIRE(loaded.has_handle());
    auto call = fakes[1].calls().back();
    CHECK(call.what == "load_token " + std::string(hsm::kTokenHashSize, 'h'));
    CHECK(call.uid == 1000);
    CHECK(call.client == peer.client);
    CHECK(call.text == "the PIN");

    wire::Request sign;
    sign.mutable_sign()->set_module(1);
    sign.mutable_sign()->set_handle(loaded.handle().handle());
    sign.mutable_sign()->mutable_mechanism()->set_kind(wire::MECH_ECDSA);
    sign.mutable_sign()->set_data("digest");
    auto signed_ = handler.handle(sign, peer);
    REQUIRE(signed_.has_data());
    CHECK(signed_.data().data() == "signed by 1: digest");
    call = fakes[1].calls().back();
    CHECK(call.what == "sign");
    CHECK(call.handle == loaded.handle().handle());

    fakes[1].fail_next_with(ErrorCode::module_not_usable, "module 1 lost its token");
    auto lost = handler.handle(sign, peer);
    CHECK(error_of(lost) == wire::ERROR_MODULE_NOT_USABLE);
    CHECK(lost.error().message() == "module 1 lost its token");
    fakes[1].fail_next_with(ErrorCode::transient, "module 1 did not answer in time");
    CHECK(error_of(handler.handle(sign, peer)) == wire::ERROR_TRANSIENT);

    // An admin's clear reaches the module as a new generation with nothing loaded.
    wire::Request clear;
    clear.mutable_control_module()->set_module(1);
    clear.mutable_control_module()->set_action(wire::MODULE_CLEAR);
    CHECK(handler.handle(clear, kAdmin).module().generation() == 1);
    CHECK(fakes[1].calls().back().what == "transition initialising +gen -objects");
}
