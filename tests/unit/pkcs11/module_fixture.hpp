#pragma once
// The PKCS#11 module's Instance against a scripted fleet (FakeHsm), with a
// real tokens file published in a temp dir by a stand-in for preloadrun, a
// fake clock, and the file's changes counted by hand: for the tests of
// starting (Instance) and of key reloading (Reloader). Nothing sleeps.

#include "instance.hpp"
#include "preloadrun/tokens/publisher.hpp"
#include "support/fake_clock.hpp"
#include "support/fake_hsm.hpp"
#include "support/temp_dir.hpp"

#include <doctest/doctest.h>
#include <memory>
#include <set>

namespace pkcs11test {

using namespace preloadrun;
using namespace preloadrun::pkcs11;
using namespace std::chrono_literals;

inline const hsm::TokenInfo kCard{hsm::TokenType::softcard, "card", Bytes(20, 0xca)};
inline constexpr CK_SLOT_ID kCardSlot = 1;

// preloadrun's side, as far as the module sees it: loads the card on every
// usable module (again after a clear or restore, or in a new instance of the
// service) and publishes what is loaded where. `skip`: modules it does not
// list.
class Writer {
public:
    Writer(testsupport::FakeHsm& hsm, const std::filesystem::path& path)
        : hsm_(hsm), publisher_(path) {
        file_.owner = {self_identity(), tokens::new_instance_id()};
        file_.world = std::string(40, 'a');
    }

    void publish() {
        if (file_.service_instance != to_hex(hsm_.instance)) {
            loaded_.clear(); // the service restarted: nothing of the old instance stays
        }
        file_.service_instance = to_hex(hsm_.instance);
        auto service = hsm_.connect();
        file_.modules.clear();
        for (const auto& m : hsm_.modules()) {
            if (skip.count(m.number) != 0) {
                continue;
            }
            file_.modules.push_back({m.number, m.esn,
                                     *tokens::module_state_named(hsm::to_string(m.state)),
                                     m.generation, 0, 0, false});
            if (m.state != hsm::ModuleState::usable) {
                loaded_.erase(m.number);
                continue;
            }
            auto it = loaded_.find(m.number);
            if (it == loaded_.end() || it->second.module_generation != m.generation) {
                const auto handle =
                    service->load_token(m.number, kCard.hash, SecureBuffer::from("pass"));
                loaded_[m.number] = {m.number, m.esn, m.generation, handle};
            }
        }
        tokens::Token token{tokens::TokenType::softcard, kCard.name, to_hex(kCard.hash), {}};
        for (const auto& [number, loaded] : loaded_) {
            token.loaded.push_back(loaded);
        }
        file_.tokens = {token};
        publisher_.publish(file_);
    }
    // Removes the file, as preloadrun does when it exits.
    void remove() { publisher_.remove(); }
    // The handle of the card on `module` in the last file (0: none).
    hsm::ObjectHandle handle_on(std::uint32_t module) const {
        auto it = loaded_.find(module);
        return it == loaded_.end() ? 0 : it->second.handle;
    }
    std::set<std::uint32_t> skip;

private:
    testsupport::FakeHsm& hsm_;
    tokens::Publisher publisher_;
    tokens::TokensFile file_;
    std::map<std::uint32_t, tokens::Loaded> loaded_;
};

struct Module {
    testsupport::FakeClock clock;
    testsupport::FakeHsm hsm;
    testsupport::TempDir dir;
    Writer writer{hsm, dir / "tokens.json"};
    Config config;
    ChangeCount* changes = nullptr; // owned by the reloader
    std::unique_ptr<Instance> instance;

    explicit Module(std::uint32_t modules = 3) : hsm(modules) {
        hsm.tokens = {kCard};
        hsm::KeyInfo token_key;
        token_key.ident = "tk";
        token_key.label = "token key";
        token_key.type = hsm::KeyType::aes;
        token_key.bits = 256;
        token_key.token = kCard;
        hsm::KeyInfo module_key;
        module_key.ident = "mk";
        module_key.label = "module key";
        module_key.type = hsm::KeyType::aes;
        module_key.bits = 256;
        hsm.keys = {token_key, module_key};
        config.reload_keys = true;
        config.load_sharing = true;
        config.tokens_file = dir / "tokens.json";
        config.retry_window = 1s;
        config.service_wait = 0ms; // an operation no module can serve fails at once
    }

    // C_Initialize.
    void start() {
        Instance::Seams seams;
        seams.connect = [this] { return hsm.connect(); };
        seams.clock = &clock;
        seams.watch = [this](const std::filesystem::path&) {
            auto count = std::make_unique<ChangeCount>();
            changes = count.get();
            return count;
        };
        instance = std::make_unique<Instance>(config, std::move(seams), true);
    }
    // preloadrun rewrote the file, and the watcher saw it.
    void republish() {
        writer.publish();
        REQUIRE(changes != nullptr);
        changes->changed();
    }
    // What the module does at the start of each operation (C_SignInit...).
    void operation() { instance->before_operation_init(); }
    // preloadrun rewrote the file, and the next operation saw it.
    void rewritten() {
        republish();
        operation();
    }

    std::shared_ptr<KeyObject> key(const std::string& ident) const {
        for (const auto& k : instance->objects().keys()) {
            if (k->info.ident == ident) {
                return k;
            }
        }
        FAIL("no key " << ident);
        return nullptr;
    }
    // The application uses both keys on every member: loaded there.
    void use_keys() {
        auto lease = instance->pool().acquire();
        for (std::uint32_t m : instance->group().members()) {
            for (const char* ident : {"tk", "mk"}) {
                instance->router().load(*lease, *key(ident), m);
            }
        }
    }
    // Both keys are loaded on `module` now, in this instance of the service.
    bool keys_on(std::uint32_t module) const {
        return key("tk")->handle_on(module).has_value() && key("mk")->handle_on(module).has_value();
    }
    std::vector<std::uint32_t> members() const { return instance->group().members(); }
    std::optional<hsm::ObjectHandle> card_handle(std::uint32_t module) const {
        const auto handle = instance->slots().handle(kCardSlot, module);
        return handle ? std::optional(handle->handle) : std::nullopt;
    }
};

} // namespace pkcs11test
