#pragma once
// The hsmsim backend: Service over hsmsim's client socket, and the admin
// client for its owner-only admin socket (fault injection, enrolment).

#include "preloadrun/common/bytes.hpp"
#include "preloadrun/common/fd.hpp"
#include "preloadrun/hsm/service.hpp"

#include <memory>

namespace preloadrun::hsm {

namespace wire_detail {
class Connection; // one framed, handshaken request/response connection
}

// drain: out of service for maintenance (failed to clients; operations
// under way finish); undrain: back in service, as after a restore.
enum class ModuleAction { clear, fail, restore, remove, drain, undrain };

class SimClient final : public Service {
public:
    // Connects and performs the version handshake. Throws Error(unavailable)
    // naming the socket path and why when it cannot connect (no socket,
    // refused, not open to this user, no answer to the handshake),
    // Error(protocol) on a version mismatch.
    explicit SimClient(const Endpoint& endpoint);
    ~SimClient() override;

    const Bytes& world_id() const noexcept override;
    const Bytes& instance() const noexcept override;
    const std::string& server_name() const noexcept;

    WorldInfo world() override;
    std::vector<ModuleInfo> modules() override;
    std::vector<TokenInfo> tokens() override;
    std::vector<KeyInfo> keys() override;
    TokenInfo create_token(TokenType type, const std::string& name,
                           const SecureBuffer& passphrase) override;
    void change_passphrase(std::uint32_t module, const Bytes& token_hash,
                           const SecureBuffer& passphrase, const SecureBuffer& fresh) override;
    ObjectHandle load_token(std::uint32_t module, const Bytes& token_hash,
                            const SecureBuffer& passphrase) override;
    ObjectHandle load_key(std::uint32_t module, const std::string& ident,
                          ObjectHandle token_handle) override;
    // One LoadKeys request per 1,024 keys.
    std::vector<KeyLoadResult> load_keys(std::uint32_t module,
                                         const std::vector<KeyToLoad>& keys) override;
    void unload(std::uint32_t module, ObjectHandle handle) override;
    GeneratedKey generate_key(std::uint32_t module, const KeySpec& spec) override;
    void destroy_key(const std::string& ident, std::uint32_t module,
                     ObjectHandle token_handle) override;
    // Removes a softcard or card set from the world (hsmsim's own: not part
    // of Service). token_handle is this caller's handle of that token on
    // `module`. Throws Error(conflict) while it protects keys, unless
    // with_keys, which removes them with it.
    void destroy_token(const Bytes& token_hash, std::uint32_t module, ObjectHandle token_handle,
                       bool with_keys);
    Bytes sign(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
               const Bytes& data) override;
    void verify(std::uint32_t module, ObjectHandle key, const Mechanism& mech, const Bytes& data,
                const Bytes& signature) override;
    Bytes encrypt(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                  const Bytes& data) override;
    Bytes decrypt(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                  const Bytes& data) override;
    Bytes random(std::uint32_t module, std::uint32_t length) override;
    Bytes wrap_key(std::uint32_t module, ObjectHandle wrapping_key, const Mechanism& mech,
                   ObjectHandle key) override;
    void verify_public(std::uint32_t module, const Bytes& public_key, const Mechanism& mech,
                       const Bytes& data, const Bytes& signature) override;
    Bytes encrypt_public(std::uint32_t module, const Bytes& public_key, const Mechanism& mech,
                         const Bytes& data) override;
    bool usable() noexcept override;

    // Subscribes to module events on this connection (hsm::subscribe), which
    // then serves nothing else: the SimClient is left without one.
    std::unique_ptr<EventStream> into_event_stream();

private:
    std::unique_ptr<wire_detail::Connection> conn_;
};

class SimAdmin {
public:
    // endpoint.socket_path is the admin socket (HSMFLEET_ADMIN_SOCKET).
    explicit SimAdmin(const Endpoint& endpoint);
    ~SimAdmin();

    std::vector<ModuleInfo> modules();
    ModuleInfo control(std::uint32_t module, ModuleAction action);
    ModuleInfo add_module();
    ModuleInfo set_latency(std::uint32_t module, std::uint32_t latency_ms);
    ModuleInfo fail_next(std::uint32_t module, std::uint32_t count);

private:
    std::unique_ptr<wire_detail::Connection> conn_;
};

// The admin endpoint from HSMFLEET_ADMIN_SOCKET (or the documented default).
Endpoint default_admin_endpoint();

} // namespace preloadrun::hsm
