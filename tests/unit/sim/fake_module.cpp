#include "fake_module.hpp"

#include "preloadrun/common/error.hpp"

#include <stdexcept>
#include <utility>

namespace simtest {

using namespace preloadrun;
using preloadrun::sim::Caller;

namespace {

std::string text_of(const Bytes& bytes) {
    return std::string(bytes.begin(), bytes.end());
}

} // namespace

FakeModule::FakeModule(sim::ModuleStart start)
    : number_(start.number), esn_(std::move(start.esn)), report_(std::move(start.report)),
      state_(start.state), generation_(start.generation) {}

std::vector<FakeModule::Call> FakeModule::calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
}

void FakeModule::fail_next_with(ErrorCode code, std::string message) {
    std::lock_guard lock(mutex_);
    fail_next_.emplace(code, std::move(message));
}

void FakeModule::report(hsm::ModuleAction action, const std::string& why) {
    report_(action, why);
}

hsm::ModuleInfo FakeModule::info() const {
    std::lock_guard lock(mutex_);
    hsm::ModuleInfo info;
    info.number = number_;
    info.esn = esn_;
    info.state = state_;
    info.generation = generation_;
    info.objects = objects_;
    return info;
}

hsm::ModuleState FakeModule::state() const {
    std::lock_guard lock(mutex_);
    return state_;
}

std::uint64_t FakeModule::generation() const {
    std::lock_guard lock(mutex_);
    return generation_;
}

sim::Module::Change FakeModule::transition(hsm::ModuleState state, bool new_generation,
                                           bool drop_objects, bool drained) {
    Change change{this->state(), generation(), {}};
    {
        std::lock_guard lock(mutex_);
        state_ = state;
        generation_ += new_generation ? 1 : 0;
        objects_ = drop_objects ? 0 : objects_;
        calls_.push_back(Call{"transition " + std::string(hsm::to_string(state)) +
                                  (new_generation ? " +gen" : "") +
                                  (drop_objects ? " -objects" : "") + (drained ? " drained" : ""),
                              0,
                              sim::kNoClient,
                              0,
                              {}});
    }
    change.now = info();
    return change;
}

void FakeModule::set_latency(std::uint32_t) {
    throw Error(ErrorCode::usage, "module " + std::to_string(number_) + " has no latency to set");
}

void FakeModule::set_fail_next(std::uint32_t) {
    throw Error(ErrorCode::usage, "module " + std::to_string(number_) + " injects no failures");
}

void FakeModule::operation(Call call) {
    std::lock_guard lock(mutex_);
    calls_.push_back(std::move(call));
    if (fail_next_) {
        auto [code, message] = std::exchange(fail_next_, std::nullopt).value();
        throw Error(code, message);
    }
    if (state_ != hsm::ModuleState::usable) {
        throw Error(ErrorCode::module_not_usable, "module " + std::to_string(number_) + " is " +
                                                      std::string(hsm::to_string(state_)));
    }
}

hsm::ObjectHandle FakeModule::load_token(const Caller& caller, const Bytes& token_hash,
                                         const SecureBuffer& passphrase) {
    operation({"load_token " + text_of(token_hash), caller.uid, caller.client, 0,
               std::string(passphrase.view())});
    std::lock_guard lock(mutex_);
    ++objects_;
    return next_handle_++;
}

void FakeModule::change_passphrase(const Caller& caller, const Bytes& token_hash,
                                   const SecureBuffer& passphrase, const SecureBuffer&) {
    operation({"change_passphrase " + text_of(token_hash), caller.uid, caller.client, 0,
               std::string(passphrase.view())});
}

hsm::ObjectHandle FakeModule::load_key(const Caller& caller, const std::string& ident,
                                       hsm::ObjectHandle token_handle) {
    operation({"load_key " + ident, caller.uid, caller.client, token_handle, {}});
    std::lock_guard lock(mutex_);
    ++objects_;
    return next_handle_++;
}

void FakeModule::unload(const Caller& caller, hsm::ObjectHandle handle) {
    operation({"unload", caller.uid, caller.client, handle, {}});
}

hsm::GeneratedKey FakeModule::generate_key(const Caller& caller, const hsm::KeySpec& spec) {
    operation({"generate_key", caller.uid, caller.client, spec.token_handle, spec.label});
    std::lock_guard lock(mutex_);
    hsm::GeneratedKey generated;
    generated.handle = next_handle_++;
    generated.key.label = spec.label;
    generated.key.type = spec.type;
    ++objects_;
    return generated;
}

Bytes FakeModule::sign(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism&,
                       const Bytes& data) {
    operation({"sign", caller.uid, caller.client, key, text_of(data)});
    const std::string signature = "signed by " + std::to_string(number_) + ": " + text_of(data);
    return Bytes(signature.begin(), signature.end());
}

void FakeModule::verify(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism&,
                        const Bytes& data, const Bytes&) {
    operation({"verify", caller.uid, caller.client, key, text_of(data)});
}

Bytes FakeModule::encrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism&,
                          const Bytes& data) {
    operation({"encrypt", caller.uid, caller.client, key, text_of(data)});
    return data;
}

Bytes FakeModule::decrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism&,
                          const Bytes& data) {
    operation({"decrypt", caller.uid, caller.client, key, text_of(data)});
    return data;
}

Bytes FakeModule::random(const Caller& caller, std::uint32_t length) {
    operation({"random", caller.uid, caller.client, 0, std::to_string(length)});
    return Bytes(length, 4); // chosen by a fair dice roll
}

void FakeModule::verify_public(const Caller& caller, const Bytes&, const hsm::Mechanism&,
                               const Bytes& data, const Bytes&) {
    operation({"verify_public", caller.uid, caller.client, 0, text_of(data)});
}

Bytes FakeModule::encrypt_public(const Caller& caller, const Bytes&, const hsm::Mechanism&,
                                 const Bytes& data) {
    operation({"encrypt_public", caller.uid, caller.client, 0, text_of(data)});
    return data;
}

Bytes FakeModule::wrap_key(const Caller& caller, hsm::ObjectHandle wrapping_key,
                           const hsm::Mechanism&, hsm::ObjectHandle key) {
    operation({"wrap_key " + std::to_string(key), caller.uid, caller.client, wrapping_key, {}});
    return Bytes(8, 5);
}

void FakeModule::with_token(const Caller& caller, hsm::ObjectHandle token_handle,
                            const std::function<void(const hsm::TokenInfo& token)>& body) {
    operation({"with_token", caller.uid, caller.client, token_handle, {}});
    body(hsm::TokenInfo{hsm::TokenType::softcard, "fake", Bytes(hsm::kTokenHashSize, 7)});
}

std::size_t FakeModule::unload_client(sim::ClientId client) {
    std::lock_guard lock(mutex_);
    calls_.push_back(Call{"unload_client", 0, client, 0, {}});
    return 0;
}

std::size_t FakeModule::unload_matching(const sim::ObjectMatch&) {
    std::lock_guard lock(mutex_);
    calls_.push_back(Call{"unload_matching", 0, sim::kNoClient, 0, {}});
    return 0;
}

std::size_t FakeModule::held_by(uid_t) const {
    return 0;
}

sim::ModuleFactory FakeModules::factory() {
    return [this](sim::ModuleStart start) -> std::unique_ptr<sim::Module> {
        auto module = std::make_unique<FakeModule>(std::move(start));
        std::lock_guard lock(mutex_);
        made_.resize(std::max<std::size_t>(made_.size(), module->number()));
        made_[module->number() - 1] = module.get();
        return module;
    };
}

FakeModule& FakeModules::operator[](std::uint32_t number) {
    std::lock_guard lock(mutex_);
    if (number == 0 || number > made_.size() || made_[number - 1] == nullptr) {
        throw std::out_of_range("no fake module " + std::to_string(number));
    }
    return *made_[number - 1];
}

} // namespace simtest
