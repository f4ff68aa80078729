#include "member/member_module.hpp"

#include "member/mechanism.hpp"
#include "member/p11.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/log.hpp"
#include "wire/codec.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

namespace preloadrun::sim::member {

namespace {

std::shared_ptr<spdlog::logger> logger() {
    return log::get("sim.member");
}

enum DataKind { kSign, kEncrypt, kDecrypt };

} // namespace

MemberModule::MemberModule(ModuleStart start, MemberConfig config, std::string set,
                           MemberContext context)
    : number_(start.number), esn_(std::move(start.esn)), report_(std::move(start.report)),
      context_(std::move(context)), config_(std::move(config)), set_(std::move(set)),
      state_(start.state), generation_(start.generation),
      objects_(start.number, start.objects, std::move(start.handles)),
      wakeup_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!wakeup_) {
        throw_errno("eventfd");
    }
}

void MemberModule::start() {
    monitor_ = std::thread([this] { monitor(); });
}

bool MemberModule::wait_first_try(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock lock(mutex_);
    return tried_cv_.wait_until(lock, deadline, [&] { return tried_; });
}

MemberModule::~MemberModule() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
        if (worker_) {
            worker_->kill("");
        }
    }
    wake();
    if (monitor_.joinable()) {
        monitor_.join();
    }
}

std::string MemberModule::who() const {
    return "member " + esn_ + " (module " + std::to_string(number_) + ")";
}

void MemberModule::reconfigure(MemberConfig config, std::string set) {
    {
        std::lock_guard lock(mutex_);
        if (config == config_ && set == set_) {
            return;
        }
        config_ = std::move(config);
        set_ = std::move(set);
        restart_wanted_ = true;
    }
    wake();
}

// ---- state ----

hsm::ModuleInfo MemberModule::info() const {
    std::lock_guard lock(mutex_);
    hsm::ModuleInfo info;
    info.number = number_;
    info.esn = esn_;
    info.state = state_;
    info.generation = generation_;
    info.latency_ms = static_cast<std::uint32_t>(std::lround(latency_us_ / 1000.0));
    info.ops = ops_;
    info.ops_failed = ops_failed_;
    info.objects = static_cast<std::uint32_t>(objects_.size());
    info.drained = drained_;
    info.lacks = lacks_;
    return info;
}

hsm::ModuleState MemberModule::state() const {
    std::lock_guard lock(mutex_);
    return state_;
}

std::uint64_t MemberModule::generation() const {
    std::lock_guard lock(mutex_);
    return generation_;
}

Module::Change MemberModule::transition(hsm::ModuleState state, bool new_generation,
                                        bool drop_objects, bool drained) {
    std::map<hsm::ObjectHandle, ObjectTable::Object> dropped;
    Change change{};
    {
        std::lock_guard lock(mutex_);
        change.previous_state = state_;
        change.previous_generation = generation_;
        state_ = state;
        drained_ = drained;
        failed_by_admin_ = state == hsm::ModuleState::failed && !self_report_;
        if (new_generation) {
            ++generation_;
        }
        if (drop_objects) {
            dropped = objects_.take_all();
            logout_wanted_ = logout_wanted_ || logged_in_;
        }
        if (state == hsm::ModuleState::removed && worker_) {
            worker_->kill("");
        }
        change.now.number = number_;
    }
    change.now = info();
    wake();
    return change;
}

void MemberModule::set_latency(std::uint32_t) {
    throw Error(ErrorCode::usage, who() + " is a PKCS#11 token: its latency is its own");
}

void MemberModule::set_fail_next(std::uint32_t) {
    throw Error(ErrorCode::usage,
                who() + " is a PKCS#11 token: failures are not injected into it (use fail)");
}

// ---- operations ----

std::shared_ptr<Worker> MemberModule::usable_worker() const {
    std::lock_guard lock(mutex_);
    if (state_ != hsm::ModuleState::usable) {
        throw Error(ErrorCode::module_not_usable,
                    who() + " is " + std::string(hsm::to_string(state_)) + " (generation " +
                        std::to_string(generation_) + ")");
    }
    if (!worker_ || !worker_->alive()) {
        throw Error(ErrorCode::module_not_usable, who() + ": its token does not answer");
    }
    return worker_;
}

worker::Reply MemberModule::call(Worker& worker, const worker::Request& request) {
    return checked(worker, worker.call(request));
}

worker::Reply MemberModule::checked(Worker& worker, worker::Reply reply) {
    if (!reply.function().empty()) {
        auto error = error_of(reply.rv(), esn_, reply.function(), reply.message());
        if (error.code() == ErrorCode::module_not_usable) {
            worker.kill(error.what()); // the monitor reports the member failed
        }
        throw error;
    }
    return reply;
}

template <class Body>
auto MemberModule::operate(bool counted, Body&& body) -> decltype(body(std::declval<Worker&>())) {
    auto worker = usable_worker();
    const auto start = std::chrono::steady_clock::now();
    auto account = [&](bool ok) {
        const auto took =
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count();
        std::lock_guard lock(mutex_);
        if (!ok) {
            ++ops_failed_;
            return;
        }
        if (counted) {
            ++ops_;
            latency_us_ = latency_us_ == 0 ? took : latency_us_ * 0.9 + took * 0.1;
        }
    };
    try {
        if constexpr (std::is_void_v<decltype(body(*worker))>) {
            body(*worker);
            account(true);
        } else {
            auto result = body(*worker);
            account(true);
            return result;
        }
    } catch (...) {
        account(false);
        throw;
    }
}

PassphraseDigest MemberModule::digest_of(const SecureBuffer& passphrase) const {
    return passphrase_digest(context_.digest_key, passphrase);
}

void MemberModule::refresh_keys(Worker& worker) {
    // Never across a login or logout: a library may give the private keys
    // new handles at each login, and those of an inventory made before it
    // would be stale.
    std::lock_guard serial(login_mutex_);
    refresh_keys_locked(worker);
}

namespace {
// The most key objects (private and public) a member may show.
constexpr int kMaxInventory = 200000;
} // namespace

void MemberModule::refresh_keys_locked(Worker& worker) {
    // Page by page: a token may hold more keys than one frame carries.
    worker::InventoryReply inventory;
    std::uint32_t offset = 0;
    do {
        worker::Request request;
        request.mutable_inventory()->set_offset(offset);
        auto reply = call(worker, request);
        auto& page = *reply.mutable_inventory();
        if (page.next() != 0 && page.next() <= offset) {
            worker.kill("its inventory went backwards");
            throw Error(ErrorCode::module_not_usable, who() + ": its inventory went backwards");
        }
        if (inventory.keys_size() + page.keys_size() > kMaxInventory) {
            throw Error(ErrorCode::limit, who() + " shows more than " +
                                              std::to_string(kMaxInventory) +
                                              " key objects: not served");
        }
        for (auto& key : *page.mutable_keys()) {
            *inventory.add_keys() = std::move(key);
        }
        offset = page.next();
    } while (offset != 0);
    std::string set;
    {
        std::lock_guard lock(mutex_);
        set = set_;
    }
    auto keys = context_.catalog.add_inventory(esn_, set, inventory);
    std::lock_guard lock(mutex_);
    device_keys_ = std::move(keys);
}

void MemberModule::login(Worker& worker, const Caller& caller, const Bytes& token_hash,
                         const SecureBuffer& passphrase) {
    const auto digest = digest_of(passphrase);
    const auto set_text = "token set " + set_;
    auto admission = context_.limiter.admit(caller.uid, token_hash, digest);
    if (admission.verdict == PassphraseLimiter::Verdict::refused) {
        throw Error(ErrorCode::too_many_attempts, "too many wrong PINs for " + set_text +
                                                      " from this user; try again in " +
                                                      seconds_text(admission.retry_after));
    }
    if (admission.verdict == PassphraseLimiter::Verdict::known_wrong) {
        throw Error(ErrorCode::wrong_passphrase, "wrong PIN for " + set_text);
    }
    auto outcome = PassphraseLimiter::Outcome::undecided;
    try {
        bool logged_in = false;
        std::optional<PassphraseDigest> known;
        {
            std::lock_guard lock(mutex_);
            logged_in = logged_in_ && !logout_wanted_;
            known = pin_digest_;
        }
        if (logged_in) {
            // Logged in already: the PIN must be the one that did it.
            if (!known || *known != digest) {
                outcome = PassphraseLimiter::Outcome::wrong;
                throw Error(ErrorCode::wrong_passphrase, "wrong PIN for " + set_text);
            }
        } else {
            worker::Request logout;
            logout.mutable_logout();
            call(worker, logout); // a login left from before (a clear) goes first
            worker::Request request;
            request.mutable_login()->set_pin(passphrase.data(), passphrase.size());
            try {
                call(worker, request);
            } catch (const Error& e) {
                request.mutable_login()->mutable_pin()->assign(passphrase.size(), '\0');
                wipe_stack();
                if (e.code() == ErrorCode::wrong_passphrase) {
                    outcome = PassphraseLimiter::Outcome::wrong;
                }
                throw;
            }
            request.mutable_login()->mutable_pin()->assign(passphrase.size(), '\0');
            wipe_stack(); // what serialising the request left
            std::lock_guard lock(mutex_);
            logged_in_ = true;
            logout_wanted_ = false;
            pin_digest_ = digest;
        }
        outcome = PassphraseLimiter::Outcome::right;
    } catch (...) {
        context_.limiter.finished(caller.uid, token_hash, digest, outcome);
        throw;
    }
    context_.limiter.finished(caller.uid, token_hash, digest, outcome);
}

hsm::ObjectHandle MemberModule::load_token(const Caller& caller, const Bytes& token_hash,
                                           const SecureBuffer& passphrase) {
    return operate(false, [&](Worker& worker) {
        hsm::TokenInfo token;
        {
            std::lock_guard lock(mutex_);
            token = MemberCatalog::token_of(set_);
            if (set_.empty() || token.hash != token_hash) {
                throw Error(ErrorCode::not_found,
                            who() + " does not hold that token" +
                                (set_.empty() ? "" : " (it is in set " + set_ + ")"));
            }
        }
        // The login, the inventory and the token's object in one go: a
        // logout (nothing loaded) cannot fall between them.
        std::lock_guard serial(login_mutex_);
        login(worker, caller, token_hash, passphrase);
        refresh_keys_locked(worker);
        std::lock_guard lock(mutex_);
        ObjectTable::Object object;
        object.owner = caller.uid;
        object.client = caller.client;
        object.token = std::make_shared<const TokenObject>(TokenObject{token, SecureBuffer()});
        return objects_.add(std::move(object));
    });
}

hsm::ObjectHandle MemberModule::load_key(const Caller& caller, const std::string& ident,
                                         hsm::ObjectHandle token_handle) {
    return operate(false, [&](Worker& worker) {
        auto key = context_.catalog.key(ident);
        {
            std::lock_guard lock(mutex_);
            const auto& token = objects_.find(token_handle, caller.uid);
            if (!token.token || !key.info.token || token.token->info.hash != key.info.token->hash) {
                throw Error(ErrorCode::invalid_handle,
                            "handle " + std::to_string(token_handle) + " on " + who() +
                                " is not the token that protects key " + ident);
            }
        }
        if (context_.catalog.is_refused(esn_, ident)) {
            throw Error(ErrorCode::not_found, who() + " holds a different key under CKA_ID " +
                                                  to_hex(key.info.id) + ": not used for it");
        }
        std::unique_lock lock(mutex_);
        auto found = device_keys_.find(ident);
        if (found == device_keys_.end()) {
            lock.unlock();
            refresh_keys(worker);
            lock.lock();
            found = device_keys_.find(ident);
            if (found == device_keys_.end() && !logged_in_) {
                // Its private keys show after a login: not known yet.
                throw Error(ErrorCode::transient, who() + " is not logged in to its token");
            }
            if (found == device_keys_.end()) {
                throw Error(ErrorCode::not_found,
                            who() + " has no key with CKA_ID " + to_hex(key.info.id) +
                                (context_.catalog.is_refused(esn_, ident)
                                     ? " that is the same key as the other members'"
                                     : ""));
            }
        }
        ObjectTable::Object object;
        object.owner = caller.uid;
        object.client = caller.client;
        object.key = std::make_shared<const KeyObject>(KeyObject{key.info, nullptr, token_handle});
        return objects_.add(std::move(object));
    });
}

void MemberModule::unload(const Caller& caller, hsm::ObjectHandle handle) {
    {
        std::lock_guard lock(mutex_);
        objects_.erase(handle, caller.uid);
    }
    logout_if_unused();
}

void MemberModule::logout_if_unused() {
    bool any_token = false;
    {
        std::lock_guard lock(mutex_);
        any_token = objects_.holds_token();
        if (!any_token && logged_in_) {
            logout_wanted_ = true;
        }
    }
    if (!any_token) {
        wake();
    }
}

void MemberModule::change_passphrase(const Caller&, const Bytes&, const SecureBuffer&,
                                     const SecureBuffer&) {
    throw Error(ErrorCode::usage, who() + " is a PKCS#11 token: its PIN is changed with its "
                                          "vendor's tools");
}

hsm::GeneratedKey MemberModule::generate_key(const Caller&, const hsm::KeySpec&) {
    throw Error(ErrorCode::usage, who() + " is a PKCS#11 token: its keys are made with its "
                                          "vendor's tools and found by CKA_ID");
}

void MemberModule::require_mechanism(const Worker& worker, const hsm::Mechanism& mech) const {
    const auto wanted = mechanism_type(mech.kind);
    const auto& offered = worker.token().mechanisms();
    if (std::find(offered.begin(), offered.end(), wanted) == offered.end()) {
        // Another module of the fleet may offer it.
        throw Error(ErrorCode::transient, who() + " does not offer mechanism " +
                                              std::to_string(wanted) +
                                              " (see its library's C_GetMechanismList)");
    }
}

std::string MemberModule::key_ident(const Caller& caller, hsm::ObjectHandle key) const {
    std::lock_guard lock(mutex_);
    const auto& object = objects_.find(key, caller.uid);
    if (!object.key) {
        throw Error(ErrorCode::invalid_handle,
                    "handle " + std::to_string(key) + " on " + who() + " is a token, not a key");
    }
    return object.key->info.ident;
}

std::uint64_t MemberModule::device_handle(const std::string& ident, bool public_half) const {
    std::lock_guard lock(mutex_);
    auto it = device_keys_.find(ident);
    if (it == device_keys_.end()) {
        throw Error(ErrorCode::transient, who() + " does not show key " + ident + " now");
    }
    const auto device = public_half ? it->second.public_handle : it->second.private_handle;
    if (device == 0) {
        throw Error(ErrorCode::crypto, who() + " has no public key object for that key");
    }
    return device;
}

worker::Reply MemberModule::key_call(Worker& worker, const Caller& caller, hsm::ObjectHandle key,
                                     bool public_half, worker::Request& request,
                                     worker::Operation& op) {
    const auto ident = key_ident(caller, key);
    for (int attempt = 0;; ++attempt) {
        std::uint64_t device = 0;
        try {
            device = device_handle(ident, public_half);
        } catch (const Error& e) {
            if (e.code() != ErrorCode::transient || attempt > 0) {
                throw;
            }
            // Not in the last inventory (one made before a login): look again.
            logger()->info("member {}: key {} was not in its last inventory: looking again", esn_,
                           ident);
            refresh_keys(worker);
            continue;
        }
        op.set_handle(device);
        auto reply = worker.call(request);
        const bool stale =
            reply.rv() == CKR_OBJECT_HANDLE_INVALID || reply.rv() == CKR_KEY_HANDLE_INVALID;
        if (attempt == 0 && !reply.function().empty() && stale) {
            refresh_keys(worker); // the library renumbered its keys (a new login)
            continue;
        }
        return checked(worker, std::move(reply));
    }
}

Bytes MemberModule::data_operation(const Caller& caller, hsm::ObjectHandle key,
                                   const hsm::Mechanism& mech, const Bytes& data, int kind) {
    return operate(true, [&](Worker& worker) {
        require_mechanism(worker, mech);
        worker::Request request;
        auto* op = kind == kSign      ? request.mutable_sign()
                   : kind == kEncrypt ? request.mutable_encrypt()
                                      : request.mutable_decrypt();
        *op->mutable_mechanism() = hsm::codec::to_wire(mech);
        op->set_data(std::string(data.begin(), data.end()));
        auto reply = key_call(worker, caller, key, kind == kEncrypt, request, *op);
        return Bytes(reply.data().begin(), reply.data().end());
    });
}

Bytes MemberModule::sign(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                         const Bytes& data) {
    return data_operation(caller, key, mech, data, kSign);
}

Bytes MemberModule::encrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                            const Bytes& data) {
    return data_operation(caller, key, mech, data, kEncrypt);
}

Bytes MemberModule::decrypt(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                            const Bytes& data) {
    return data_operation(caller, key, mech, data, kDecrypt);
}

void MemberModule::verify(const Caller& caller, hsm::ObjectHandle key, const hsm::Mechanism& mech,
                          const Bytes& data, const Bytes& signature) {
    operate(true, [&](Worker& worker) {
        require_mechanism(worker, mech);
        worker::Request request;
        auto* op = request.mutable_verify();
        *op->mutable_mechanism() = hsm::codec::to_wire(mech);
        op->set_data(std::string(data.begin(), data.end()));
        op->set_signature(std::string(signature.begin(), signature.end()));
        key_call(worker, caller, key, true, request, *op);
    });
}

Bytes MemberModule::random(const Caller&, std::uint32_t length) {
    return operate(true, [&](Worker& worker) {
        worker::Request request;
        request.mutable_random()->set_length(length);
        auto reply = call(worker, request);
        return Bytes(reply.data().begin(), reply.data().end());
    });
}

void MemberModule::verify_public(const Caller&, const Bytes&, const hsm::Mechanism&, const Bytes&,
                                 const Bytes&) {
    throw Error(ErrorCode::transient, who() + " is a PKCS#11 token: it uses the keys it holds");
}

Bytes MemberModule::encrypt_public(const Caller&, const Bytes&, const hsm::Mechanism&,
                                   const Bytes&) {
    throw Error(ErrorCode::transient, who() + " is a PKCS#11 token: it uses the keys it holds");
}

Bytes MemberModule::wrap_key(const Caller&, hsm::ObjectHandle, const hsm::Mechanism&,
                             hsm::ObjectHandle) {
    throw Error(ErrorCode::usage, who() + " is a PKCS#11 token: its keys are found by CKA_ID, "
                                          "not made extractable here; wrap them with its "
                                          "vendor's tools");
}

void MemberModule::with_token(const Caller&, hsm::ObjectHandle,
                              const std::function<void(const hsm::TokenInfo&)>&) {
    throw Error(ErrorCode::usage, who() + " is a PKCS#11 token: its keys are destroyed with its "
                                          "vendor's tools");
}

std::size_t MemberModule::unload_client(ClientId client) {
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        n = objects_.erase_client(client).size();
    }
    if (n > 0) {
        logout_if_unused();
    }
    return n;
}

std::size_t MemberModule::unload_matching(const ObjectMatch& match) {
    std::size_t n = 0;
    {
        std::lock_guard lock(mutex_);
        n = objects_
                .erase_matching([&](const ObjectTable::Object& o) {
                    return match(LoadedObject{o.token ? &o.token->info : nullptr,
                                              o.key ? &o.key->info : nullptr});
                })
                .size();
    }
    if (n > 0) {
        logout_if_unused();
    }
    return n;
}

std::size_t MemberModule::held_by(uid_t owner) const {
    std::lock_guard lock(mutex_);
    return objects_.held_by(owner);
}

} // namespace preloadrun::sim::member
