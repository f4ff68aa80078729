#include "module_fixture.hpp"

#include <fstream>

using namespace pkcs11test;

TEST_CASE("pkcs11::Instance at start: the group, and the handles of the tokens file") {
    Module m;

    SUBCASE("a live file for this instance: its handles at the modules' generations") {
        m.writer.publish();
        m.hsm.clear(2); // cleared since preloadrun loaded the card there...
        m.hsm.ready(2); // ...and not yet loaded again
        m.start();
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
        CHECK(m.instance->slots().preloaded(kCardSlot));
        CHECK(m.card_handle(1) == m.writer.handle_on(1));
        CHECK_FALSE(m.card_handle(2)); // of generation 0: means nothing now
        CHECK(m.card_handle(3) == m.writer.handle_on(3));
        CHECK(m.instance->objects().keys().size() == 2);
    }
    SUBCASE("no load-sharing: the first usable module only") {
        m.config.reload_keys = false;
        m.config.load_sharing = false;
        m.hsm.fail_module(1);
        m.writer.publish();
        m.start();
        CHECK(m.members() == std::vector<std::uint32_t>{2});
        CHECK(m.instance->group().records().size() == 3); // every module is tracked
    }
    SUBCASE("a file of another instance of the service") {
        m.writer.publish();
        m.hsm.restart();
        SUBCASE("without key reloading: not used") {
            m.config.reload_keys = false;
            m.start();
            CHECK_FALSE(m.instance->slots().preloaded(kCardSlot));
            CHECK_FALSE(m.card_handle(1));
        }
        SUBCASE("with key reloading: its handles are taken once it names this one") {
            m.start();
            CHECK(m.instance->slots().preloaded(kCardSlot));
            CHECK_FALSE(m.card_handle(1));
            m.rewritten();
            CHECK(m.card_handle(1) == m.writer.handle_on(1));
            CHECK(m.card_handle(3) == m.writer.handle_on(3));
        }
    }
    SUBCASE("no file: the tokens need C_Login") {
        m.start();
        CHECK_FALSE(m.instance->slots().preloaded(kCardSlot));
        CHECK(m.members() == std::vector<std::uint32_t>{1, 2, 3});
    }
    SUBCASE("a file whose owner is gone (no lock held): not used") {
        tokens::TokensFile file;
        file.owner = {self_identity(), tokens::new_instance_id()};
        file.world = std::string(40, 'a');
        file.service_instance = to_hex(m.hsm.instance);
        file.tokens = {{tokens::TokenType::softcard, kCard.name, to_hex(kCard.hash), {}}};
        std::ofstream(m.dir / "gone.json") << tokens::encode(file);
        m.config.tokens_file = m.dir / "gone.json";
        m.start();
        CHECK_FALSE(m.instance->slots().preloaded(kCardSlot));
    }
}

TEST_CASE("pkcs11::Instance offers the mechanisms every usable module can do") {
    using hsm::MechanismKind;
    Module m;
    m.hsm.lacks(2, {MechanismKind::rsa_oaep});
    m.hsm.lacks(3, {MechanismKind::ecdsa, MechanismKind::aes_gcm});
    m.hsm.fail_module(3); // what a failed module can do does not count
    m.start();
    CHECK_FALSE(m.instance->offers(MechanismKind::rsa_oaep));
    CHECK(m.instance->offers(MechanismKind::ecdsa));
    CHECK(m.instance->offers(MechanismKind::aes_gcm));
    CHECK(m.instance->offers(MechanismKind::rsa_pss));

    SUBCASE("after a restart of the service, what the modules can do then") {
        m.hsm.lacks(2, {});
        m.hsm.restart(); // every module usable again, module 3 too
        m.instance->recover();
        CHECK(m.instance->offers(MechanismKind::rsa_oaep));
        CHECK_FALSE(m.instance->offers(MechanismKind::ecdsa));
        CHECK_FALSE(m.instance->offers(MechanismKind::aes_gcm));
    }
}

TEST_CASE("pkcs11::Instance tracks 32 modules: the 33rd is not used") {
    Module m(33);
    m.writer.skip = {33}; // preloadrun tracks 32 too
    m.writer.publish();
    m.start();
    CHECK(m.instance->group().records().size() == 32);
    CHECK_FALSE(m.instance->group().record(33));
    CHECK(m.members().size() == 32);
}
