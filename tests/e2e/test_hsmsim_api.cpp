// End-to-end tests of hsmsim through the C++ client: each test case starts the
// real `hsmsim serve` (HSMSIM_PATH) on sockets in its own temp directory and
// talks to it with SimClient, SimAdmin and EventStream. Signatures and
// ciphertexts are checked with OpenSSL here, outside the service.

#include "preloadrun/common/error.hpp"
#include "preloadrun/common/ossl.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"
#include "support/temp_dir.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <filesystem>
#include <functional>
#include <grp.h>
#include <memory>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <optional>
#include <ostream>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

extern char** environ;

namespace fs = std::filesystem;
using namespace preloadrun;
using namespace preloadrun::hsm;
using namespace std::chrono_literals;

namespace {

// ---- the service process ------------------------------------------------------

struct SimOptions {
    std::uint32_t modules = 2;
    std::uint32_t init_delay_ms = 100;
    std::uint32_t op_latency_ms = 0;
};

// `hsmsim serve` in a child process, with its world and sockets in `dir`.
class SimProcess {
public:
    SimProcess(const fs::path& dir, SimOptions options = {})
        : kmdata_(dir / "km"), socket_(dir / "c.sock"), admin_socket_(dir / "a.sock") {
        fs::create_directory(kmdata_);
        fs::permissions(kmdata_, fs::perms::owner_all);
        std::vector<std::string> args = {HSMSIM_PATH,       "serve",
                                         "--kmdata",        kmdata_.string(),
                                         "--socket",        socket_.string(),
                                         "--admin-socket",  admin_socket_.string(),
                                         "--modules",       std::to_string(options.modules),
                                         "--init-delay-ms", std::to_string(options.init_delay_ms),
                                         "--op-latency-ms", std::to_string(options.op_latency_ms)};
        std::vector<char*> argv;
        for (auto& a : args)
            argv.push_back(a.data());
        argv.push_back(nullptr);

        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0)
            throw std::runtime_error("pipe2");
        out_ = fds[0];
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
        // The environment without NOTIFY_SOCKET (ctest might run under systemd).
        std::vector<char*> env;
        for (char** e = environ; *e != nullptr; ++e) {
            if (std::strncmp(*e, "NOTIFY_SOCKET=", 14) != 0)
                env.push_back(*e);
        }
        env.push_back(nullptr);
        const int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), env.data());
        posix_spawn_file_actions_destroy(&fa);
        ::close(fds[1]);
        if (rc != 0)
            throw std::runtime_error(std::string("posix_spawn hsmsim: ") + strerror(rc));

        const std::string line = read_line(10s);
        const std::string prefix = "hsmsim: ready: ";
        if (line.rfind(prefix, 0) != 0) {
            kill_now();
            throw std::runtime_error("hsmsim serve printed no ready line, got: '" + line + "'");
        }
        ready_line_ = line;
        const auto w = line.find(", world ");
        const auto s = line.find(", socket ");
        if (w == std::string::npos || s == std::string::npos) {
            throw std::runtime_error("malformed ready line: " + line);
        }
        world_hex_ = line.substr(w + 8, s - (w + 8));
    }

    SimProcess(const SimProcess&) = delete;
    SimProcess& operator=(const SimProcess&) = delete;
    ~SimProcess() {
        if (pid_ > 0)
            stop();
        if (out_ >= 0)
            ::close(out_);
    }

    // SIGTERM, then waits; returns the wait status.
    int stop(int sig = SIGTERM) {
        ::kill(pid_, sig);
        int status = 0;
        const auto deadline = std::chrono::steady_clock::now() + 10s;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > deadline) {
                kill_now();
                return -1;
            }
            std::this_thread::sleep_for(5ms);
        }
        pid_ = -1;
        return status;
    }

    Endpoint endpoint() const { return {socket_.string(), 10s, "e2e"}; }
    Endpoint admin_endpoint() const { return {admin_socket_.string(), 10s, "e2e"}; }
    const fs::path& socket() const { return socket_; }
    const fs::path& admin_socket() const { return admin_socket_; }
    const std::string& world_hex() const { return world_hex_; }
    const std::string& ready_line() const { return ready_line_; }

private:
    std::string read_line(std::chrono::milliseconds timeout) {
        std::string line;
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (true) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0)
                return line;
            pollfd p{out_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0)
                return line;
            char c;
            const auto n = ::read(out_, &c, 1);
            if (n <= 0 || c == '\n')
                return line;
            line.push_back(c);
        }
    }
    void kill_now() {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

    fs::path kmdata_, socket_, admin_socket_;
    pid_t pid_ = -1;
    int out_ = -1;
    std::string ready_line_, world_hex_;
};

// ---- errors ---------------------------------------------------------------------

// The enumerator's name (to_string gives prose, this gives what tests compare).
std::string code_name(ErrorCode code) {
    switch (code) {
    case ErrorCode::internal:
        return "internal";
    case ErrorCode::usage:
        return "usage";
    case ErrorCode::io:
        return "io";
    case ErrorCode::corrupt:
        return "corrupt";
    case ErrorCode::not_found:
        return "not_found";
    case ErrorCode::already_exists:
        return "already_exists";
    case ErrorCode::wrong_passphrase:
        return "wrong_passphrase";
    case ErrorCode::permission:
        return "permission";
    case ErrorCode::unavailable:
        return "unavailable";
    case ErrorCode::protocol:
        return "protocol";
    case ErrorCode::timeout:
        return "timeout";
    case ErrorCode::module_not_usable:
        return "module_not_usable";
    case ErrorCode::transient:
        return "transient";
    case ErrorCode::invalid_handle:
        return "invalid_handle";
    case ErrorCode::limit:
        return "limit";
    case ErrorCode::crypto:
        return "crypto";
    case ErrorCode::bad_signature:
        return "bad_signature";
    case ErrorCode::conflict:
        return "conflict";
    case ErrorCode::too_many_attempts:
        return "too_many_attempts";
    }
    return "unknown code " + std::to_string(static_cast<int>(code));
}

// What a call threw: the ErrorCode's name ("no error" when it returned) and
// the message. Compares equal to a code name; prints both in failed checks.
struct Outcome {
    std::string code;
    std::string message;
    friend bool operator==(const Outcome& o, const char* code) { return o.code == code; }
    friend bool operator!=(const Outcome& o, const char* code) { return o.code != code; }
    friend std::ostream& operator<<(std::ostream& os, const Outcome& o) {
        return os << o.code << (o.message.empty() ? "" : " (" + o.message + ")");
    }
};

Outcome error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return {code_name(e.code()), e.what()};
    } catch (const std::exception& e) {
        return {"not a preloadrun::Error", e.what()};
    }
    return {"no error", ""};
}

// ---- OpenSSL, outside the service ------------------------------------------------

using preloadrun::ossl::Pkey;
using preloadrun::ossl::PkeyCtx;

Pkey public_key(const Bytes& der) {
    const unsigned char* p = der.data();
    Pkey key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
    REQUIRE_MESSAGE(key != nullptr, "public_der is not a SubjectPublicKeyInfo");
    return key;
}

Bytes digest(const EVP_MD* md, std::string_view text) {
    Bytes out(static_cast<std::size_t>(EVP_MD_get_size(md)));
    unsigned int len = 0;
    REQUIRE(EVP_Digest(text.data(), text.size(), out.data(), &len, md, nullptr) == 1);
    return out;
}

// r||s (fixed width) -> DER ECDSA-Sig-Value.
Bytes ecdsa_der(const Bytes& rs) {
    const auto half = static_cast<int>(rs.size() / 2);
    ECDSA_SIG* sig = ECDSA_SIG_new();
    BIGNUM* r = BN_bin2bn(rs.data(), half, nullptr);
    BIGNUM* s = BN_bin2bn(rs.data() + half, half, nullptr);
    ECDSA_SIG_set0(sig, r, s);
    unsigned char* der = nullptr;
    const int len = i2d_ECDSA_SIG(sig, &der);
    Bytes out(der, der + std::max(len, 0));
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    return out;
}

bool openssl_verify_ecdsa(const Bytes& public_der, const EVP_MD* md, const Bytes& dgst,
                          const Bytes& rs) {
    auto key = public_key(public_der);
    PkeyCtx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    REQUIRE(EVP_PKEY_verify_init(ctx.get()) == 1);
    REQUIRE(EVP_PKEY_CTX_set_signature_md(ctx.get(), md) == 1);
    const Bytes der = ecdsa_der(rs);
    return EVP_PKEY_verify(ctx.get(), der.data(), der.size(), dgst.data(), dgst.size()) == 1;
}

bool openssl_verify_rsa(const Bytes& public_der, const EVP_MD* md, int padding, int salt_len,
                        const Bytes& dgst, const Bytes& sig) {
    auto key = public_key(public_der);
    PkeyCtx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    REQUIRE(EVP_PKEY_verify_init(ctx.get()) == 1);
    REQUIRE(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), padding) == 1);
    if (md != nullptr)
        REQUIRE(EVP_PKEY_CTX_set_signature_md(ctx.get(), md) == 1);
    if (padding == RSA_PKCS1_PSS_PADDING) {
        REQUIRE(EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx.get(), salt_len) == 1);
        REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), md) == 1);
    }
    return EVP_PKEY_verify(ctx.get(), sig.data(), sig.size(), dgst.data(), dgst.size()) == 1;
}

Bytes openssl_oaep_encrypt(const Bytes& public_der, const Bytes& label, const Bytes& plain) {
    auto key = public_key(public_der);
    PkeyCtx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    REQUIRE(EVP_PKEY_encrypt_init(ctx.get()) == 1);
    REQUIRE(EVP_PKEY_CTX_set_rsa_padding(ctx.get(), RSA_PKCS1_OAEP_PADDING) == 1);
    REQUIRE(EVP_PKEY_CTX_set_rsa_oaep_md(ctx.get(), EVP_sha256()) == 1);
    REQUIRE(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx.get(), EVP_sha256()) == 1);
    if (!label.empty()) {
        auto* l = static_cast<unsigned char*>(OPENSSL_memdup(label.data(), label.size()));
        REQUIRE(EVP_PKEY_CTX_set0_rsa_oaep_label(ctx.get(), l, static_cast<int>(label.size())) ==
                1);
    }
    std::size_t len = 0;
    REQUIRE(EVP_PKEY_encrypt(ctx.get(), nullptr, &len, plain.data(), plain.size()) == 1);
    Bytes out(len);
    REQUIRE(EVP_PKEY_encrypt(ctx.get(), out.data(), &len, plain.data(), plain.size()) == 1);
    out.resize(len);
    return out;
}

Mechanism mech(MechanismKind kind, Hash hash = Hash::none, Hash mgf_hash = Hash::none,
               std::uint32_t salt_len = 0) {
    Mechanism m;
    m.kind = kind;
    m.hash = hash;
    m.mgf_hash = mgf_hash;
    m.salt_len = salt_len;
    return m;
}

Mechanism ecdsa() {
    return mech(MechanismKind::ecdsa);
}

KeySpec spec(KeyType type, std::uint32_t bits, std::string label, bool persistent,
             ObjectHandle token = 0) {
    KeySpec s;
    s.type = type;
    s.bits = bits;
    s.label = std::move(label);
    s.persistent = persistent;
    s.token_handle = token;
    return s;
}

const ModuleInfo& module_of(const std::vector<ModuleInfo>& mods, std::uint32_t number) {
    for (const auto& m : mods) {
        if (m.number == number)
            return m;
    }
    FAIL("module " << number << " is not listed");
    throw std::logic_error("unreachable");
}

// The next non-snapshot event for `module`, skipping others, within `timeout`.
std::optional<ModuleEvent> next_event_for(EventStream& events, std::uint32_t module,
                                          std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        auto ev = events.next(std::max(left, 1ms));
        if (ev && !ev->snapshot && ev->module.number == module)
            return ev;
    }
    return std::nullopt;
}

const SecureBuffer kPass = SecureBuffer::from("e2e correct horse");
const SecureBuffer kWrongPass = SecureBuffer::from("e2e wrong horse");

} // namespace

// ---- lifecycle ---------------------------------------------------------------------

TEST_CASE("hsmsim serve says ready and serves the world it names and stops cleanly on SIGTERM") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 3});
    SimClient client(sim.endpoint());
    CHECK(to_hex(client.world_id()) == sim.world_hex());
    const auto world = client.world();
    CHECK(to_hex(world.world_id) == sim.world_hex());
    CHECK(world.modules == 3);
    const auto mods = client.modules();
    REQUIRE(mods.size() == 3);
    for (const auto& m : mods)
        CHECK(m.state == ModuleState::usable);
    CHECK(client.random(1, 32).size() == 32);

    const int status = sim.stop(SIGTERM);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_FALSE(fs::exists(sim.socket()));
    CHECK_FALSE(fs::exists(sim.admin_socket()));
}

TEST_CASE("an event stream ends with Error(unavailable) when the service stops") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 2});
    auto events = subscribe(sim.endpoint());
    SimClient client(sim.endpoint());
    const auto mods = client.modules();
    REQUIRE(events->snapshot().size() == mods.size());
    for (const auto& m : events->snapshot()) {
        CHECK(module_of(mods, m.number).generation == m.generation);
        CHECK(module_of(mods, m.number).state == m.state);
    }
    const int status = sim.stop(SIGTERM);
    CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
    CHECK(error_of([&] {
              for (int i = 0; i < 100; ++i)
                  events->next(100ms); // snapshot events, then the end
          }) == "unavailable");
}

TEST_CASE("no service: Error(unavailable) naming the socket") {
    testsupport::TempDir dir;
    const Endpoint ep{(dir / "none.sock").string(), 2s, "e2e"};
    const auto outcome = error_of([&] { SimClient client(ep); });
    CHECK(outcome == "unavailable");
    CHECK(outcome.message.find(ep.socket_path) != std::string::npos);
    CHECK(error_of([&] { SimAdmin admin(ep); }) == "unavailable");
    CHECK(error_of([&] { subscribe(ep); }) == "unavailable");
}

TEST_CASE("admin requests are refused on the client socket") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path());
    CHECK(error_of([&] {
              SimAdmin wrong(sim.endpoint());
              wrong.control(1, ModuleAction::clear);
          }) == "permission");
    SimClient client(sim.endpoint());
    CHECK(module_of(client.modules(), 1).generation ==
          module_of(SimAdmin(sim.admin_endpoint()).modules(), 1).generation);
}

// ---- tokens ------------------------------------------------------------------------

TEST_CASE("a softcard loads on every usable module") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 3});
    SimClient client(sim.endpoint());
    const auto token = client.create_token(TokenType::softcard, "sc1", kPass);
    CHECK(token.type == TokenType::softcard);
    CHECK(token.name == "sc1");
    REQUIRE(token.hash.size() == kTokenHashSize);
    const auto tokens = client.tokens();
    CHECK(std::find(tokens.begin(), tokens.end(), token) != tokens.end());

    SUBCASE("with the right passphrase: one handle per module") {
        const auto before = client.modules();
        std::vector<ObjectHandle> handles;
        for (const auto& m : before) {
            REQUIRE(m.state == ModuleState::usable);
            const auto h = client.load_token(m.number, token.hash, kPass);
            CHECK(h != 0);
            handles.push_back(h);
        }
        const auto after = client.modules();
        for (const auto& m : before) {
            CHECK(module_of(after, m.number).objects == m.objects + 1);
        }
        // Handles are per module (types.hpp, hsmsim(1)): the same number on
        // two modules is fine. On one module they are never reused, which the
        // clear test checks.
    }

    SUBCASE("a wrong passphrase is refused and nothing is loaded") {
        const auto before = client.modules();
        CHECK(error_of([&] { client.load_token(1, token.hash, kWrongPass); }) ==
              "wrong_passphrase");
        const auto after = client.modules();
        for (const auto& m : before) {
            CAPTURE(m.number);
            CHECK(module_of(after, m.number).objects == m.objects);
            CHECK(module_of(after, m.number).generation == m.generation);
            CHECK(module_of(after, m.number).state == m.state);
        }
    }

    SUBCASE("an unknown token is not found") {
        Bytes other = token.hash;
        other[0] ^= 0xff;
        CHECK(error_of([&] { client.load_token(1, other, kPass); }) == "not_found");
    }

    SUBCASE("a duplicate name is refused") {
        CHECK(error_of([&] { client.create_token(TokenType::softcard, "sc1", kPass); }) ==
              "already_exists");
    }
}

// ---- signatures and encryption, checked by OpenSSL ------------------------------------

TEST_CASE("ECDSA signatures of digests verify with OpenSSL") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 1});
    SimClient client(sim.endpoint());

    struct Case {
        std::string name;
        KeyType type;
        const EVP_MD* md;
        std::size_t sig_size;
        bool persistent;
    };
    for (const Case& c : {Case{"P-256 session", KeyType::ec_p256, EVP_sha256(), 64, false},
                          Case{"P-256 persistent", KeyType::ec_p256, EVP_sha256(), 64, true},
                          Case{"P-384 persistent", KeyType::ec_p384, EVP_sha384(), 96, true}}) {
        CAPTURE(c.name);
        const auto gk = client.generate_key(1, spec(c.type, 0, c.name, c.persistent));
        INFO("key " << gk.key.ident);
        REQUIRE(gk.handle != 0);
        CHECK(gk.key.type == c.type);
        CHECK(gk.key.persistent == c.persistent);
        CHECK_FALSE(gk.key.token.has_value());
        REQUIRE_FALSE(gk.key.public_der.empty());

        const Bytes d = digest(c.md, "message for " + c.name);
        const Bytes sig = client.sign(1, gk.handle, ecdsa(), d);
        REQUIRE(sig.size() == c.sig_size);
        CHECK(openssl_verify_ecdsa(gk.key.public_der, c.md, d, sig));
        CHECK(error_of([&] { client.verify(1, gk.handle, ecdsa(), d, sig); }) == "no error");

        Bytes bad = sig;
        bad[bad.size() - 1] ^= 0x01;
        CHECK_FALSE(openssl_verify_ecdsa(gk.key.public_der, c.md, d, bad));
        CHECK(error_of([&] { client.verify(1, gk.handle, ecdsa(), d, bad); }) == "bad_signature");

        if (c.persistent) {
            const auto keys = client.keys();
            auto it = std::find_if(keys.begin(), keys.end(),
                                   [&](const KeyInfo& k) { return k.ident == gk.key.ident; });
            REQUIRE(it != keys.end());
            CHECK(it->public_der == gk.key.public_der);
            CHECK(it->label == c.name);
        }
    }
}

TEST_CASE("RSA PKCS#1 v1.5 and PSS signatures verify with OpenSSL") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 1});
    SimClient client(sim.endpoint());
    const auto gk = client.generate_key(1, spec(KeyType::rsa, 2048, "rsa-sign", true));
    CHECK(gk.key.type == KeyType::rsa);
    CHECK(gk.key.bits == 2048);
    const Bytes d = digest(EVP_sha256(), "rsa message");

    SUBCASE("PKCS#1 v1.5 of a SHA-256 digest") {
        const Mechanism m = mech(MechanismKind::rsa_pkcs1, Hash::sha256);
        const Bytes sig = client.sign(1, gk.handle, m, d);
        CHECK(sig.size() == 256);
        CHECK(openssl_verify_rsa(gk.key.public_der, EVP_sha256(), RSA_PKCS1_PADDING, 0, d, sig));
        CHECK(error_of([&] { client.verify(1, gk.handle, m, d, sig); }) == "no error");
    }
    SUBCASE("PKCS#1 v1.5 of a raw DigestInfo (hash none)") {
        // DigestInfo for SHA-256 (RFC 8017 9.2 note 1) followed by the digest.
        static constexpr std::uint8_t kPrefix[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
                                                   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                                                   0x01, 0x05, 0x00, 0x04, 0x20};
        Bytes info(sizeof kPrefix + d.size());
        std::memcpy(info.data(), kPrefix, sizeof kPrefix);
        std::memcpy(info.data() + sizeof kPrefix, d.data(), d.size());
        const Bytes sig = client.sign(1, gk.handle, mech(MechanismKind::rsa_pkcs1), info);
        CHECK(openssl_verify_rsa(gk.key.public_der, EVP_sha256(), RSA_PKCS1_PADDING, 0, d, sig));
    }
    SUBCASE("PSS, SHA-256, MGF1-SHA-256, 32-byte salt") {
        const Mechanism m = mech(MechanismKind::rsa_pss, Hash::sha256, Hash::sha256, 32);
        const Bytes sig = client.sign(1, gk.handle, m, d);
        CHECK(sig.size() == 256);
        CHECK(
            openssl_verify_rsa(gk.key.public_der, EVP_sha256(), RSA_PKCS1_PSS_PADDING, 32, d, sig));
        const Bytes sig2 = client.sign(1, gk.handle, m, d);
        CHECK(sig2 != sig); // PSS is randomised
        Bytes other = d;
        other[0] ^= 1;
        CHECK_FALSE(openssl_verify_rsa(gk.key.public_der, EVP_sha256(), RSA_PKCS1_PSS_PADDING, 32,
                                       other, sig));
    }
}

TEST_CASE("RSA OAEP and AES-GCM round trips") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 1});
    SimClient client(sim.endpoint());
    const Bytes plain = to_bytes("attack at dawn, e2e");

    SUBCASE("OAEP: encrypted by OpenSSL with the public key, decrypted by the service") {
        const auto gk = client.generate_key(1, spec(KeyType::rsa, 3072, "oaep", false));
        Mechanism m = mech(MechanismKind::rsa_oaep, Hash::sha256, Hash::sha256);
        m.label = to_bytes("lbl");
        const Bytes ct = openssl_oaep_encrypt(gk.key.public_der, to_bytes("lbl"), plain);
        CHECK(client.decrypt(1, gk.handle, m, ct) == plain);
        const Bytes ct2 = client.encrypt(1, gk.handle, m, plain);
        CHECK(ct2.size() == 384);
        CHECK(client.decrypt(1, gk.handle, m, ct2) == plain);
        Mechanism other_label = m;
        other_label.label = to_bytes("other");
        CHECK(error_of([&] { client.decrypt(1, gk.handle, other_label, ct); }) == "crypto");
    }
    SUBCASE("AES-256-GCM with AAD; a changed byte is refused") {
        const auto gk = client.generate_key(1, spec(KeyType::aes, 256, "gcm", false));
        CHECK(gk.key.public_der.empty());
        Mechanism m = mech(MechanismKind::aes_gcm);
        m.iv = Bytes(12, 0x42);
        m.aad = to_bytes("header");
        m.tag_bits = 128;
        const Bytes ct = client.encrypt(1, gk.handle, m, plain);
        CHECK(ct.size() == plain.size() + 16);
        CHECK(client.decrypt(1, gk.handle, m, ct) == plain);
        Bytes bad = ct;
        bad[0] ^= 1;
        CHECK(error_of([&] { client.decrypt(1, gk.handle, m, bad); }) == "crypto");
        Mechanism other_aad = m;
        other_aad.aad = to_bytes("Header");
        CHECK(error_of([&] { client.decrypt(1, gk.handle, other_aad, ct); }) == "crypto");
    }
    SUBCASE("AES-128-GCM persistent key") {
        const auto gk = client.generate_key(1, spec(KeyType::aes, 128, "gcm128", true));
        CHECK(gk.key.bits == 128);
        Mechanism m = mech(MechanismKind::aes_gcm);
        m.iv = Bytes(12, 7);
        CHECK(client.decrypt(1, gk.handle, m, client.encrypt(1, gk.handle, m, plain)) == plain);
    }
}

// ---- keys protected by tokens ---------------------------------------------------------

TEST_CASE("a softcard key loads only with the token's handle on that module") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 2});
    SimClient client(sim.endpoint());
    const auto token = client.create_token(TokenType::softcard, "keys", kPass);
    const auto t1 = client.load_token(1, token.hash, kPass);
    const auto gk = client.generate_key(1, spec(KeyType::ec_p256, 0, "sc-key", true, t1));
    REQUIRE(gk.key.token.has_value());
    CHECK(gk.key.token->hash == token.hash);
    CHECK(gk.key.token->type == TokenType::softcard);
    const Bytes d = digest(EVP_sha256(), "softcard key");
    CHECK(openssl_verify_ecdsa(gk.key.public_der, EVP_sha256(), d,
                               client.sign(1, gk.handle, ecdsa(), d)));

    // Module 2 has no token loaded: the key does not load.
    CHECK(error_of([&] { client.load_key(2, gk.key.ident, 0); }) != "no error");
    // With the token's handle on module 2, it does, and it is the same key.
    const auto t2 = client.load_token(2, token.hash, kPass);
    ObjectHandle k2 = 0;
    REQUIRE(error_of([&] { k2 = client.load_key(2, gk.key.ident, t2); }) == "no error");
    CHECK(k2 != 0);
    CHECK(openssl_verify_ecdsa(gk.key.public_der, EVP_sha256(), d, client.sign(2, k2, ecdsa(), d)));

    // A module-protected persistent key loads without a token.
    const auto mk = client.generate_key(1, spec(KeyType::rsa, 2048, "mod-key", true));
    ObjectHandle mk2 = 0;
    REQUIRE(error_of([&] { mk2 = client.load_key(2, mk.key.ident, 0); }) == "no error");
    const Mechanism pkcs1 = mech(MechanismKind::rsa_pkcs1, Hash::sha256);
    CHECK(openssl_verify_rsa(mk.key.public_der, EVP_sha256(), RSA_PKCS1_PADDING, 0, d,
                             client.sign(2, mk2, pkcs1, d)));
    // Unknown ident.
    CHECK(error_of([&] { client.load_key(2, std::string(40, '0'), 0); }) == "not_found");
}

// ---- clear and other module events ------------------------------------------------------

TEST_CASE("clearing a module drops its objects and is pushed as events") {
    testsupport::TempDir dir;
    const auto delay = 300ms;
    SimProcess sim(dir.path(), {.modules = 2, .init_delay_ms = 300});
    SimClient client(sim.endpoint());
    SimAdmin admin(sim.admin_endpoint());
    auto events = subscribe(sim.endpoint());
    REQUIRE(events->snapshot().size() == 2);

    const auto token = client.create_token(TokenType::softcard, "clr", kPass);
    const auto t1 = client.load_token(1, token.hash, kPass);
    const auto key = client.generate_key(1, spec(KeyType::ec_p256, 0, "clr-key", false));
    client.load_token(2, token.hash, kPass);
    const auto before = client.modules();
    const auto& m1 = module_of(before, 1);
    REQUIRE(m1.objects >= 2);
    // Drain the initial snapshot events, if the stream delivers them.
    while (events->next(0ms)) {
    }

    const auto t0 = std::chrono::steady_clock::now();
    const auto info = admin.control(1, ModuleAction::clear);
    CHECK(info.generation == m1.generation + 1);

    pollfd p{events->fd(), POLLIN, 0};
    CHECK(::poll(&p, 1, 2000) == 1); // the stream's fd wakes a poll loop

    auto ev = next_event_for(*events, 1, 2s);
    REQUIRE_MESSAGE(ev.has_value(), "no event after a clear");
    CHECK(ev->module.generation == m1.generation + 1);
    CHECK(ev->previous_generation == m1.generation);
    CHECK(ev->module.state == ModuleState::initialising);
    CHECK(ev->module.objects == 0);

    const auto during = client.modules();
    CHECK(module_of(during, 1).objects == 0);
    CHECK(module_of(during, 1).generation == m1.generation + 1);
    CHECK(module_of(during, 2).objects == module_of(before, 2).objects);
    CHECK(module_of(during, 2).generation == module_of(before, 2).generation);
    // While initialising the module refuses work.
    CHECK(error_of([&] { client.sign(1, key.handle, ecdsa(), Bytes(32, 1)); }) != "no error");

    ev = next_event_for(*events, 1, 5s);
    REQUIRE_MESSAGE(ev.has_value(), "no event when the module became usable again");
    CHECK(ev->module.state == ModuleState::usable);
    CHECK(ev->previous_state == ModuleState::initialising);
    CHECK(ev->module.generation == m1.generation + 1);
    CHECK(std::chrono::steady_clock::now() - t0 >= delay * 9 / 10);
    CHECK(ev->sequence > 0);

    // Old handles are gone for good.
    CHECK(error_of([&] { client.sign(1, key.handle, ecdsa(), Bytes(32, 1)); }) == "invalid_handle");
    CHECK(error_of([&] { client.unload(1, t1); }) == "invalid_handle");
    // And the module works again.
    const auto t1b = client.load_token(1, token.hash, kPass);
    CHECK(t1b != 0);
    CHECK(t1b != t1); // handles are never reused on a module
    CHECK(t1b != key.handle);
}

TEST_CASE("fail and restore and add and remove are pushed as events") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 2, .init_delay_ms = 100});
    SimClient client(sim.endpoint());
    SimAdmin admin(sim.admin_endpoint());
    auto events = subscribe(sim.endpoint());
    while (events->next(0ms)) {
    }
    const auto key = client.generate_key(2, spec(KeyType::ec_p256, 0, "f", false));
    const auto g = module_of(client.modules(), 2).generation;

    admin.control(2, ModuleAction::fail);
    auto ev = next_event_for(*events, 2, 2s);
    REQUIRE(ev.has_value());
    CHECK(ev->module.state == ModuleState::failed);
    CHECK(ev->module.generation == g);
    CHECK(error_of([&] { client.sign(2, key.handle, ecdsa(), Bytes(32, 2)); }) ==
          "module_not_usable");

    admin.control(2, ModuleAction::restore);
    ev = next_event_for(*events, 2, 2s);
    REQUIRE(ev.has_value());
    CHECK(ev->module.generation == g + 1);
    if (ev->module.state == ModuleState::initialising)
        ev = next_event_for(*events, 2, 3s);
    REQUIRE(ev.has_value());
    CHECK(ev->module.state == ModuleState::usable);

    const auto added = admin.add_module();
    CHECK(added.number == 3);
    ev = next_event_for(*events, 3, 3s);
    REQUIRE_MESSAGE(ev.has_value(), "no event for an added module");
    CHECK(client.world().modules == 3);

    // Unknown modules are not found, on the admin socket as on the client one.
    CHECK(error_of([&] { admin.control(99, ModuleAction::clear); }) == "not_found");
    CHECK(error_of([&] { admin.set_latency(99, 5); }) == "not_found");
    CHECK(error_of([&] { client.random(99, 8); }) == "not_found");

    admin.control(1, ModuleAction::remove);
    ev = next_event_for(*events, 1, 2s);
    REQUIRE(ev.has_value());
    CHECK(ev->module.state == ModuleState::removed);
    CHECK(error_of([&] { client.random(1, 8); }) == "module_not_usable");
}

// ---- uids ---------------------------------------------------------------------------------

TEST_CASE("another uid cannot use an object") {
    if (::geteuid() != 0) {
        MESSAGE("skipped: needs root to setuid() a child to nobody");
        return;
    }
    const passwd* nobody = ::getpwnam("nobody");
    REQUIRE(nobody != nullptr);
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 1});
    // The child runs as nobody: it must reach the client socket. The temp dir
    // is 0700 (mkdtemp) and the socket is 0660 root:root, so open the
    // directory for traversal and give the socket nobody's group, as an
    // operator gives the socket the group of the HSM's users.
    fs::permissions(dir.path(), fs::perms::owner_all | fs::perms::group_read |
                                    fs::perms::group_exec | fs::perms::others_read |
                                    fs::perms::others_exec);
    REQUIRE(::chown(sim.socket().c_str(), static_cast<uid_t>(-1), nobody->pw_gid) == 0);

    SimClient client(sim.endpoint());
    const auto key = client.generate_key(1, spec(KeyType::ec_p256, 0, "mine", false));
    const Bytes d = digest(EVP_sha256(), "uid");
    const auto ops_before = module_of(client.modules(), 1).ops;

    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        std::string result;
        if (::setgroups(0, nullptr) != 0 || ::setgid(nobody->pw_gid) != 0 ||
            ::setuid(nobody->pw_uid) != 0) {
            result = "setuid failed";
        } else {
            try {
                SimClient other(sim.endpoint());
                try {
                    other.sign(1, key.handle, ecdsa(), d);
                    result = "foreign sign: no error";
                } catch (const Error& e) {
                    result = "foreign sign: " + code_name(e.code());
                }
                try {
                    const auto own =
                        other.generate_key(1, spec(KeyType::ec_p256, 0, "nobody's", false));
                    other.sign(1, own.handle, ecdsa(), d);
                    result += "; own sign: ok";
                } catch (const Error& e) {
                    result += "; own sign: " + code_name(e.code()) + " " + e.what();
                }
            } catch (const std::exception& e) {
                result = std::string("connect: ") + e.what();
            }
        }
        (void)!::write(fds[1], result.data(), result.size());
        ::_exit(0);
    }
    ::close(fds[1]);
    std::string result;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
        result.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    CHECK(result == "foreign sign: permission; own sign: ok");
    // The owner's object still works.
    CHECK(openssl_verify_ecdsa(key.key.public_der, EVP_sha256(), d,
                               client.sign(1, key.handle, ecdsa(), d)));
    CHECK(module_of(client.modules(), 1).ops > ops_before);
}

// ---- counters and fault injection ---------------------------------------------------------

TEST_CASE("counters and injected failures and latency") {
    testsupport::TempDir dir;
    SimProcess sim(dir.path(), {.modules = 2});
    SimClient client(sim.endpoint());
    SimAdmin admin(sim.admin_endpoint());
    const auto key = client.generate_key(1, spec(KeyType::ec_p256, 0, "cnt", false));
    const Bytes d = digest(EVP_sha256(), "count");

    SUBCASE("ops counts each sign on the module that served it") {
        const auto before = client.modules();
        for (int i = 0; i < 5; ++i)
            client.sign(1, key.handle, ecdsa(), d);
        const auto after = client.modules();
        CHECK(module_of(after, 1).ops == module_of(before, 1).ops + 5);
        CHECK(module_of(after, 1).ops_failed == module_of(before, 1).ops_failed);
        CHECK(module_of(after, 2).ops == module_of(before, 2).ops);
    }
    SUBCASE("fail-next makes exactly the next N operations fail transiently") {
        const auto before = module_of(client.modules(), 1);
        CHECK(admin.fail_next(1, 2).fail_next == 2);
        CHECK(error_of([&] { client.sign(1, key.handle, ecdsa(), d); }) == "transient");
        CHECK(error_of([&] { client.sign(1, key.handle, ecdsa(), d); }) == "transient");
        CHECK(error_of([&] { client.sign(1, key.handle, ecdsa(), d); }) == "no error");
        const auto after = module_of(client.modules(), 1);
        CHECK(after.fail_next == 0);
        CHECK(after.ops_failed == before.ops_failed + 2);
        CHECK(after.generation == before.generation); // a transient failure is not a clear
    }
    SUBCASE("latency slows every operation of that module") {
        CHECK(admin.set_latency(1, 80).latency_ms == 80);
        const auto t0 = std::chrono::steady_clock::now();
        client.sign(1, key.handle, ecdsa(), d);
        CHECK(std::chrono::steady_clock::now() - t0 >= 75ms);
        CHECK(module_of(admin.modules(), 1).latency_ms == 80);
        CHECK(module_of(admin.modules(), 2).latency_ms == 0);
    }
}
