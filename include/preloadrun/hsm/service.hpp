#pragma once
// The one interface through which preloadrun and the PKCS#11 module use an
// HSM service. hsmsim's client (SimClient) is the only backend today; a vendor
// backend would implement the same interface.
//
// Every call throws preloadrun::Error on failure, with the ErrorCode telling
// what kind of failure it was (invalid_handle after a clear, transient,
// module_not_usable, wrong_passphrase, unavailable, timeout, ...) and its
// origin where it was raised: Origin::peer for what the service answered,
// Origin::local for what happened to the connection (it broke, or no answer).
// A Service object is one connection; it is not thread-safe: use one per thread.

#include "preloadrun/common/env.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/secure_buffer.hpp"
#include "preloadrun/hsm/types.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace preloadrun::hsm {

// One key of a load_keys() call, and what became of it.
struct KeyToLoad {
    std::string ident;
    ObjectHandle token_handle = 0; // 0 for a module-protected key
};
struct KeyLoadResult {
    ObjectHandle handle = 0;    // when loaded
    std::optional<Error> error; // why this key was not loaded
};

class Service {
public:
    virtual ~Service() = default;

    // The instance of the service this connection talks to (kServiceInstanceSize
    // bytes, random for each start of the service). Handles are valid only
    // within the instance that issued them.
    virtual const Bytes& instance() const noexcept = 0;
    // The Security World the service serves, as told when the connection
    // was made (world() asks again, with the module count).
    virtual const Bytes& world_id() const noexcept = 0;

    virtual WorldInfo world() = 0;
    virtual std::vector<ModuleInfo> modules() = 0;
    // The whole lists (however many pages they take on the wire): tokens by
    // type then name, keys by label then ident.
    virtual std::vector<TokenInfo> tokens() = 0;
    virtual std::vector<KeyInfo> keys() = 0;

    virtual TokenInfo create_token(TokenType type, const std::string& name,
                                   const SecureBuffer& passphrase) = 0;
    // C_SetPIN: the token's passphrase becomes `fresh` (checked as load_token
    // checks `passphrase`).
    virtual void change_passphrase(std::uint32_t module, const Bytes& token_hash,
                                   const SecureBuffer& passphrase, const SecureBuffer& fresh) = 0;
    virtual ObjectHandle load_token(std::uint32_t module, const Bytes& token_hash,
                                    const SecureBuffer& passphrase) = 0;
    virtual ObjectHandle load_key(std::uint32_t module, const std::string& ident,
                                  ObjectHandle token_handle) = 0;
    // Loads many keys onto `module`, each as load_key() would: one result per
    // key, in order, a handle or the error load_key() would have thrown for
    // it (about the key, or about the module while it loaded that key); what
    // fails the whole request (the connection, an unknown module) throws.
    // This base version calls load_key() for each; a backend that can batch
    // (SimClient: one request per 1,024 keys) overrides it.
    virtual std::vector<KeyLoadResult> load_keys(std::uint32_t module,
                                                 const std::vector<KeyToLoad>& keys);
    virtual void unload(std::uint32_t module, ObjectHandle handle) = 0;
    virtual GeneratedKey generate_key(std::uint32_t module, const KeySpec& spec) = 0;
    // Removes a persistent key from the world. A token-protected key needs
    // that token loaded by this caller: token_handle is its handle on
    // `module`. A module-protected key takes token_handle 0 (module unused)
    // and is for the world's managers and the key's creator. Throws
    // Error(permission) when the caller may not.
    virtual void destroy_key(const std::string& ident, std::uint32_t module,
                             ObjectHandle token_handle) = 0;

    virtual Bytes sign(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                       const Bytes& data) = 0;
    // Throws Error(bad_signature) when the signature does not match.
    virtual void verify(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                        const Bytes& data, const Bytes& signature) = 0;
    virtual Bytes encrypt(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                          const Bytes& data) = 0;
    virtual Bytes decrypt(std::uint32_t module, ObjectHandle key, const Mechanism& mech,
                          const Bytes& data) = 0;
    virtual Bytes random(std::uint32_t module, std::uint32_t length) = 0;
    // With a public key no HSM holds (SubjectPublicKeyInfo DER): verify
    // (Error(bad_signature)), or encrypt (RSA).
    virtual void verify_public(std::uint32_t module, const Bytes& public_key, const Mechanism& mech,
                               const Bytes& data, const Bytes& signature) = 0;
    virtual Bytes encrypt_public(std::uint32_t module, const Bytes& public_key,
                                 const Mechanism& mech, const Bytes& data) = 0;
    // C_WrapKey: `key` (its raw secret, or PKCS#8 DER of a private key)
    // encrypted with `wrapping_key` by `mech` (hsm::is_wrap). Throws
    // Error(permission) when `key` is not extractable.
    virtual Bytes wrap_key(std::uint32_t module, ObjectHandle wrapping_key, const Mechanism& mech,
                           ObjectHandle key) = 0;

    // False once this connection is known to be of no more use: the service
    // closed it (an idle connection, a service that stopped) or an earlier
    // failure broke it. Does not wait and sends nothing; a pool asks it of a
    // connection that sat unused before lending it again.
    virtual bool usable() noexcept = 0;
};

// A stream of module events on its own connection. fd() becomes readable when
// an event may be waiting, so it can sit in a poll/epoll loop.
class EventStream {
public:
    virtual ~EventStream() = default;
    // The modules as they were when the subscription started.
    virtual const std::vector<ModuleInfo>& snapshot() const = 0;
    // The instance of the service the stream comes from (Service::instance()).
    virtual const Bytes& instance() const noexcept = 0;
    virtual int fd() const = 0;
    // Waits up to `timeout` (zero: do not wait) for the next event; nullopt
    // when none arrived in time. Throws Error(unavailable) when the service
    // closed the connection.
    virtual std::optional<ModuleEvent> next(std::chrono::milliseconds timeout) = 0;
};

struct Endpoint {
    std::string socket_path;
    std::chrono::milliseconds timeout{10000}; // per request
    std::string client_name = "preloadrun";
};

// The variables that name the HSM service's sockets and user for its
// clients; the HSMSIM_ names are read when the HSMFLEET_ ones are not set.
inline constexpr AliasedVariable kSocketVariable = kServiceSocketVariable;
inline constexpr AliasedVariable kAdminSocketVariable{"HSMFLEET_ADMIN_SOCKET",
                                                      "HSMSIM_ADMIN_SOCKET"};
inline constexpr AliasedVariable kServiceUserVariable{"HSMFLEET_SERVICE_USER",
                                                      "HSMSIM_SERVICE_USER"};

// The endpoint from HSMFLEET_SOCKET (or the documented default).
Endpoint default_endpoint();

std::unique_ptr<Service> connect(const Endpoint& endpoint);
std::unique_ptr<EventStream> subscribe(const Endpoint& endpoint);
// The same on `connection` itself when it is still open and its client
// allows it (it then serves nothing else: one connection instead of two for
// a caller with nothing more to ask), else on a new connection to `endpoint`.
std::unique_ptr<EventStream> subscribe(std::unique_ptr<Service> connection,
                                       const Endpoint& endpoint);

} // namespace preloadrun::hsm
