#pragma once
// A scripted HSM service for the tests of src/pkcs11 (no socket, no hsmsim).

#include "preloadrun/common/error.hpp"
#include "preloadrun/hsm/service.hpp"

#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace preloadrun::pkcs11test {

// A scripted HSM service (one per connection): modules 1..3; signing answers the module number;
// `fail[m]` makes every operation on module m throw that code, as the
// service's reply (Origin::peer) unless `fail_origin` says the connection
// failed here.
struct World {
    std::map<std::uint32_t, ErrorCode> fail;
    Origin fail_origin = Origin::peer;
    std::map<std::uint32_t, int> ops;
    std::map<std::uint32_t, int> loads;
    std::vector<std::pair<std::uint32_t, hsm::ObjectHandle>> destroyed; // module, token handle
    int open = 0;         // connections open (FakeServices alive)
    int made = 0;         // connections made so far, numbered from 0
    std::set<int> closed; // the numbers of those the service has closed
    Bytes instance = Bytes(hsm::kServiceInstanceSize, 1); // a new value: the service restarted
};

class FakeService final : public hsm::Service {
public:
    explicit FakeService(World& w) : w_(w), serial_(w_.made++) { ++w_.open; }
    FakeService(const FakeService&) = delete;
    FakeService& operator=(const FakeService&) = delete;
    ~FakeService() override { --w_.open; }
    const Bytes& instance() const noexcept override { return w_.instance; }
    hsm::WorldInfo world() override { return {}; }
    std::vector<hsm::ModuleInfo> modules() override { return {}; }
    std::vector<hsm::TokenInfo> tokens() override { return {}; }
    std::vector<hsm::KeyInfo> keys() override { return {}; }
    hsm::TokenInfo create_token(hsm::TokenType, const std::string&, const SecureBuffer&) override {
        return {};
    }
    hsm::ObjectHandle load_token(std::uint32_t, const Bytes&, const SecureBuffer&) override {
        return 1;
    }
    hsm::ObjectHandle load_key(std::uint32_t m, const std::string&, hsm::ObjectHandle) override {
        maybe_fail(m);
        ++w_.loads[m];
        return 100 + m;
    }
    void unload(std::uint32_t, hsm::ObjectHandle) override {}
    hsm::GeneratedKey generate_key(std::uint32_t m, const hsm::KeySpec&) override {
        maybe_fail(m);
        hsm::GeneratedKey g;
        g.handle = 200 + m;
        g.key.ident = "gen";
        return g;
    }
    void destroy_key(const std::string&, std::uint32_t m, hsm::ObjectHandle token) override {
        maybe_fail(m);
        w_.destroyed.emplace_back(m, token);
    }
    Bytes sign(std::uint32_t m, hsm::ObjectHandle, const hsm::Mechanism&, const Bytes&) override {
        maybe_fail(m);
        ++w_.ops[m];
        return Bytes{static_cast<std::uint8_t>(m)};
    }
    void verify(std::uint32_t, hsm::ObjectHandle, const hsm::Mechanism&, const Bytes&,
                const Bytes&) override {}
    Bytes encrypt(std::uint32_t, hsm::ObjectHandle, const hsm::Mechanism&, const Bytes&) override {
        return {};
    }
    Bytes decrypt(std::uint32_t, hsm::ObjectHandle, const hsm::Mechanism&, const Bytes&) override {
        return {};
    }
    Bytes random(std::uint32_t, std::uint32_t n) override { return Bytes(n); }
    bool usable() noexcept override { return w_.closed.count(serial_) == 0; }
    int serial() const noexcept { return serial_; }

private:
    void maybe_fail(std::uint32_t m) {
        auto it = w_.fail.find(m);
        if (it != w_.fail.end()) {
            throw Error(it->second, "injected on module " + std::to_string(m), w_.fail_origin);
        }
    }
    World& w_;
    int serial_;
};

} // namespace preloadrun::pkcs11test
