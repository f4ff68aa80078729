#include "support/fake_hsm.hpp"

#include <algorithm>
#include <sys/eventfd.h>
#include <unistd.h>
#include <utility>

namespace testsupport {

using preloadrun::Error;

// ---- FakeHsm ---------------------------------------------------------------------

FakeHsm::FakeHsm(std::uint32_t modules) {
    for (std::uint32_t n = 1; n <= modules; ++n) {
        Module m;
        m.info.number = n;
        m.info.esn = "ESN-" + std::to_string(n);
        m.info.state = hsm::ModuleState::usable;
        modules_.push_back(std::move(m));
    }
}

FakeHsm::~FakeHsm() {
    std::lock_guard lock(mutex_);
    for (auto* stream : streams_) {
        stream->hsm_ = nullptr;
        stream->closed_ = true;
    }
}

std::unique_ptr<hsm::Service> FakeHsm::connect() {
    std::lock_guard lock(mutex_);
    if (!reachable) {
        throw Error(ErrorCode::unavailable, "the fake HSM service is not reachable");
    }
    return std::make_unique<FakeService>(*this);
}

std::unique_ptr<hsm::EventStream> FakeHsm::subscribe() {
    std::lock_guard lock(mutex_);
    if (!reachable) {
        throw Error(ErrorCode::unavailable, "the fake HSM service is not reachable");
    }
    auto stream = std::make_unique<FakeEventStream>(*this, modules(), instance);
    streams_.push_back(stream.get());
    return stream;
}

const FakeHsm::Module& FakeHsm::find(std::uint32_t number) const {
    for (const auto& m : modules_) {
        if (m.info.number == number) {
            return m;
        }
    }
    throw Error(ErrorCode::not_found, "no module " + std::to_string(number), Origin::peer);
}

FakeHsm::Module& FakeHsm::find(std::uint32_t number) {
    return const_cast<Module&>(std::as_const(*this).find(number));
}

void FakeHsm::change(std::uint32_t number, hsm::ModuleState state, bool next_generation) {
    std::lock_guard lock(mutex_);
    auto& m = find(number);
    hsm::ModuleEvent event;
    event.previous_state = m.info.state;
    event.previous_generation = m.info.generation;
    m.info.state = state;
    if (next_generation) {
        ++m.info.generation;
    }
    if (state != hsm::ModuleState::usable) {
        m.tokens.clear();
    }
    event.module = m.info;
    emit(event);
}

void FakeHsm::emit(hsm::ModuleEvent event) {
    event.sequence = ++sequence_;
    for (auto* stream : streams_) {
        stream->push(event);
    }
}

std::uint32_t FakeHsm::add() {
    std::lock_guard lock(mutex_);
    Module m;
    m.info.number = modules_.empty() ? 1 : modules_.back().info.number + 1;
    m.info.esn = "ESN-" + std::to_string(m.info.number);
    m.info.state = hsm::ModuleState::initialising;
    modules_.push_back(m);
    hsm::ModuleEvent event;
    event.module = m.info;
    event.previous_state = m.info.state;
    emit(event);
    return m.info.number;
}

void FakeHsm::clear(std::uint32_t module) {
    change(module, hsm::ModuleState::initialising, true);
}

void FakeHsm::fail_module(std::uint32_t module) {
    change(module, hsm::ModuleState::failed, false);
}

void FakeHsm::restore(std::uint32_t module) {
    change(module, hsm::ModuleState::initialising, true);
}

void FakeHsm::remove(std::uint32_t module) {
    change(module, hsm::ModuleState::removed, false);
}

void FakeHsm::ready(std::uint32_t module) {
    change(module, hsm::ModuleState::usable, false);
}

void FakeHsm::restart() {
    std::lock_guard lock(mutex_);
    drop_streams();
    instance = Bytes(hsm::kServiceInstanceSize, static_cast<std::uint8_t>(instance[0] + 1));
    for (auto& m : modules_) {
        m.tokens.clear();
        ++m.info.generation;
        m.info.state = hsm::ModuleState::usable;
    }
}

void FakeHsm::drop_streams() {
    std::lock_guard lock(mutex_);
    for (auto* stream : streams_) {
        stream->close();
    }
    streams_.clear();
}

void FakeHsm::lacks(std::uint32_t module, std::vector<hsm::MechanismKind> kinds) {
    std::lock_guard lock(mutex_);
    find(module).info.lacks = std::move(kinds);
}

hsm::ModuleInfo FakeHsm::module(std::uint32_t number) const {
    std::lock_guard lock(mutex_);
    return find(number).info;
}

std::vector<hsm::ModuleInfo> FakeHsm::modules() const {
    std::lock_guard lock(mutex_);
    std::vector<hsm::ModuleInfo> out;
    for (const auto& m : modules_) {
        out.push_back(m.info);
    }
    return out;
}

bool FakeHsm::token_loaded(std::uint32_t module, hsm::ObjectHandle handle) const {
    std::lock_guard lock(mutex_);
    return find(module).tokens.count(handle) != 0;
}

void FakeHsm::maybe_fail(std::uint32_t module) const {
    auto it = fail.find(module);
    if (it != fail.end()) {
        throw Error(it->second, "injected on module " + std::to_string(module), fail_origin);
    }
}

void FakeHsm::usable_or_throw(std::uint32_t module) const {
    const auto& m = find(module);
    if (m.info.state != hsm::ModuleState::usable) {
        throw Error(ErrorCode::module_not_usable,
                    "module " + std::to_string(module) + " is " +
                        std::string(hsm::to_string(m.info.state)),
                    Origin::peer);
    }
}

// ---- FakeService -------------------------------------------------------------------

FakeService::FakeService(FakeHsm& hsm) : hsm_(hsm), serial_(hsm.made++), instance_(hsm.instance) {
    ++hsm_.open;
}

FakeService::~FakeService() {
    std::lock_guard lock(hsm_.mutex_);
    --hsm_.open;
}

std::unique_lock<std::recursive_mutex>
FakeService::enter(std::optional<std::uint32_t> module) const {
    std::unique_lock lock(hsm_.mutex_);
    if (hsm_.instance != instance_ || hsm_.closed.count(serial_) != 0) {
        throw Error(ErrorCode::unavailable, "the fake HSM service closed the connection");
    }
    if (module) {
        hsm_.maybe_fail(*module);
    }
    return lock;
}

bool FakeService::usable() noexcept {
    std::lock_guard lock(hsm_.mutex_);
    return hsm_.closed.count(serial_) == 0 && hsm_.instance == instance_;
}

hsm::WorldInfo FakeService::world() {
    const auto lock = enter();
    return {world_id_, static_cast<std::uint32_t>(hsm_.modules_.size())};
}

std::vector<hsm::ModuleInfo> FakeService::modules() {
    const auto lock = enter();
    return hsm_.modules();
}

std::vector<hsm::TokenInfo> FakeService::tokens() {
    const auto lock = enter();
    return hsm_.tokens;
}

std::vector<hsm::KeyInfo> FakeService::keys() {
    const auto lock = enter();
    return hsm_.keys;
}

hsm::TokenInfo FakeService::create_token(hsm::TokenType, const std::string&,
                                         const preloadrun::SecureBuffer&) {
    return {};
}

hsm::ObjectHandle FakeService::load_token(std::uint32_t module, const Bytes& hash,
                                          const preloadrun::SecureBuffer&) {
    const auto lock = enter(module);
    hsm_.usable_or_throw(module);
    if (hsm_.on_load_token) {
        hsm_.on_load_token(module, hash);
    }
    const auto handle = hsm_.next_handle_++;
    hsm_.find(module).tokens.insert(handle);
    ++hsm_.token_loads[module];
    return handle;
}

void FakeService::change_passphrase(std::uint32_t module, const Bytes&,
                                    const preloadrun::SecureBuffer&,
                                    const preloadrun::SecureBuffer&) {
    const auto lock = enter(module);
    hsm_.usable_or_throw(module);
}

hsm::ObjectHandle FakeService::load_key(std::uint32_t module, const std::string&,
                                        hsm::ObjectHandle token) {
    const auto lock = enter(module);
    if (token != 0 && hsm_.find(module).tokens.count(token) == 0) {
        throw Error(ErrorCode::invalid_handle,
                    "no token " + std::to_string(token) + " on module " + std::to_string(module),
                    Origin::peer);
    }
    ++hsm_.loads[module];
    return 100 + module;
}

void FakeService::unload(std::uint32_t module, hsm::ObjectHandle handle) {
    const auto lock = enter(module);
    if (hsm_.find(module).tokens.erase(handle) == 0) {
        throw Error(ErrorCode::invalid_handle,
                    "no object " + std::to_string(handle) + " on module " + std::to_string(module),
                    Origin::peer);
    }
    hsm_.unloaded.emplace_back(module, handle);
}

hsm::GeneratedKey FakeService::generate_key(std::uint32_t module, const hsm::KeySpec&) {
    const auto lock = enter(module);
    hsm::GeneratedKey g;
    g.handle = 200 + module;
    g.key.ident = "gen";
    return g;
}

void FakeService::destroy_key(const std::string&, std::uint32_t module, hsm::ObjectHandle token) {
    const auto lock = enter(module);
    hsm_.destroyed.emplace_back(module, token);
}

Bytes FakeService::sign(std::uint32_t module, hsm::ObjectHandle, const hsm::Mechanism&,
                        const Bytes&) {
    const auto lock = enter(module);
    ++hsm_.ops[module];
    return Bytes{static_cast<std::uint8_t>(module)};
}

Bytes FakeService::encrypt(std::uint32_t module, hsm::ObjectHandle, const hsm::Mechanism& mech,
                           const Bytes& data) {
    const auto lock = enter(module);
    ++hsm_.ops[module];
    Bytes out = data;
    out.insert(out.end(), mech.tag_bits / 8, static_cast<std::uint8_t>(module));
    return out;
}

Bytes FakeService::decrypt(std::uint32_t module, hsm::ObjectHandle, const hsm::Mechanism& mech,
                           const Bytes& data) {
    const auto lock = enter(module);
    ++hsm_.ops[module];
    const std::size_t tag = mech.tag_bits / 8;
    if (data.size() < tag) {
        throw Error(ErrorCode::crypto, "shorter than the tag", Origin::peer);
    }
    return Bytes(data.begin(), data.end() - static_cast<std::ptrdiff_t>(tag));
}

// ---- FakeEventStream ------------------------------------------------------------------

FakeEventStream::FakeEventStream(FakeHsm& hsm, std::vector<hsm::ModuleInfo> snapshot,
                                 Bytes instance)
    : hsm_(&hsm), snapshot_(std::move(snapshot)), instance_(std::move(instance)),
      fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) {
        preloadrun::throw_errno("eventfd");
    }
}

FakeEventStream::~FakeEventStream() {
    if (hsm_ != nullptr) {
        std::lock_guard lock(hsm_->mutex_);
        auto& streams = hsm_->streams_;
        streams.erase(std::remove(streams.begin(), streams.end(), this), streams.end());
    }
    ::close(fd_);
}

void FakeEventStream::signal() const {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(fd_, &one, sizeof one);
}

void FakeEventStream::push(const hsm::ModuleEvent& event) {
    pending_.push_back(event);
    signal();
}

void FakeEventStream::close() {
    closed_ = true;
    hsm_ = nullptr;
    signal();
}

std::optional<hsm::ModuleEvent> FakeEventStream::next(std::chrono::milliseconds) {
    std::unique_lock<std::recursive_mutex> lock;
    if (hsm_ != nullptr) {
        lock = std::unique_lock(hsm_->mutex_);
    }
    if (pending_.empty()) {
        std::uint64_t count = 0;
        [[maybe_unused]] const auto n = ::read(fd_, &count, sizeof count);
        if (closed_) {
            signal(); // stays readable, as a closed socket does
            throw Error(ErrorCode::unavailable, "the fake HSM service closed the event stream");
        }
        return std::nullopt;
    }
    auto event = pending_.front();
    pending_.erase(pending_.begin());
    return event;
}

} // namespace testsupport
