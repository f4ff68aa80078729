// bench_pkcs11_sign: ECDSA P-256 signatures per second through this module
// against two targets, every figure measured in the same run.
//
// Target 1, one request/response at the physical limit. The limit is what one
// signature can cost at best when it is made in another process:
//   pingpong   a bare ping-pong between two processes over a Unix stream
//              socket (socketpair + fork; a 120-byte request, a 90-byte reply,
//              one blocking write and one blocking read each way): us per
//              round trip;
//   openssl    OpenSSL's ECDSA P-256 signature in-process (EVP_PKEY_sign on a
//              32-byte digest, one key and one context made once): us each;
//   limit      1e6 / (pingpong_us + openssl_us) signatures/s;
//   module1    libpreloadrun-pkcs11.so (PKCS11_MODULE_PATH) to `hsmsim serve`
//              (HSMSIM_PATH; 1 module, no simulated latency),
//              CKNFAST_LOADSHARING=1, one thread.
// Target 1 is met when module1 >= limit / 1.05.
//
// Target 2, load-sharing against an in-process software token, 4 threads:
//   module4x3  the module to `hsmsim serve --modules 3`, load-sharing on,
//              4 threads in one process (one session each);
//   softhsm4   SoftHSM2 loaded directly, 4 threads (softhsm1: 1 thread, for
//              reference).
// Target 2 is met when module4x3 >= 1.3 x softhsm4.
//
// The PKCS#11 peers all run the same client loop: C_SignInit + C_Sign,
// CKM_ECDSA on a 32-byte digest; every 64th signature of each thread (its
// first included) is made on a digest of its own and verified in software
// (OpenSSL) with the public key read from the token (CKA_EC_PARAMS,
// CKA_EC_POINT); a signature that does not verify is a broken run.
// SoftHSM2 gets its own SOFTHSM2_CONF and token directory in a private temp
// directory (token made with softhsm2-util, key with pkcs11-tool); each
// hsmsim has its own subdirectory there.
//
// Each measurement is a worker child of this program (warm-up, then S
// seconds); rounds run the measurements in rotating order, a table row per
// round, and the report gives the medians over rounds and one line:
//   RESULT pingpong_us=.. openssl_sign_us=.. limit_ops=.. module1_ops=..
//          module1_vs_limit=.. softhsm1_ops=.. module4x3_ops=.. softhsm4_ops=..
//          module4x3_vs_softhsm4=.. target1=module1>=limit/1.05 met1=yes|no
//          target2=module4x3>=1.3*softhsm4 met2=yes|no
// SoftHSM2 not installed (or softhsm2-util / pkcs11-tool missing): its
// figures are "na" and target 2 "unknown". Exit status: 0 when it measured
// (whatever the figures), 1 when something broke (including a signature that
// does not verify), 2 bad usage.
//
//   bench_pkcs11_sign [--rounds 5] [--seconds 2] [--warmup 0.3]
//       [--softhsm /usr/lib/softhsm/libsofthsm2.so]

#include "pkcs11_bench.hpp"
#include "preloadrun/common/ossl.hpp"

#include <atomic>
#include <csignal>
#include <iostream>
#include <mutex>
#include <openssl/ecdsa.h>
#include <openssl/x509.h>
#include <sys/socket.h>

using namespace pkcs11_bench;
namespace ossl = preloadrun::ossl;

namespace {

constexpr const char* kSoftPin = "1234";
constexpr int kVerifyEvery = 64;
constexpr std::size_t kRequest = 120; // bytes of a ping-pong request
constexpr std::size_t kReply = 90;    // and of its reply
constexpr double kLimitSlack = 1.05;  // target 1: module1 >= limit / 1.05
constexpr double kTarget2 = 1.3;      // target 2: module4x3 >= 1.3 x softhsm4

using Bytes = std::vector<unsigned char>;

// ---- pingpong worker ----------------------------------------------------------------------

// Reads exactly n bytes (one read(2) when the message arrives whole); false at EOF.
bool read_full(int fd, char* buf, std::size_t n) {
    while (n > 0) {
        const ssize_t got = ::read(fd, buf, n);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return false;
        }
        buf += got;
        n -= static_cast<std::size_t>(got);
    }
    return true;
}

bool write_full(int fd, const char* buf, std::size_t n) {
    while (n > 0) {
        const ssize_t put = ::write(fd, buf, n);
        if (put < 0 && errno == EINTR) {
            continue;
        }
        if (put <= 0) {
            return false;
        }
        buf += put;
        n -= static_cast<std::size_t>(put);
    }
    return true;
}

int pingpong_worker(Options& o) {
    const double seconds = o.num("seconds", 2);
    const double warmup = o.num("warmup", 0.3);
    o.done();
    ::signal(SIGPIPE, SIG_IGN);
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        throw Broken(std::string("socketpair: ") + std::strerror(errno));
    }
    const pid_t pid = ::fork();
    if (pid < 0) {
        throw Broken(std::string("fork: ") + std::strerror(errno));
    }
    if (pid == 0) { // the responder: a reply per request until EOF
        ::close(sv[0]);
        char request[kRequest];
        char reply[kReply];
        std::memset(reply, 'r', sizeof reply);
        while (read_full(sv[1], request, sizeof request) &&
               write_full(sv[1], reply, sizeof reply)) {
        }
        ::_exit(0);
    }
    ::close(sv[1]);
    char request[kRequest];
    char reply[kReply];
    std::memset(request, 'q', sizeof request);
    auto round_trip = [&] {
        if (!write_full(sv[0], request, sizeof request) || !read_full(sv[0], reply, sizeof reply)) {
            throw Broken("the ping-pong responder went away");
        }
    };
    seconds_per_op(warmup, round_trip);
    const double us = 1e6 * seconds_per_op(seconds, round_trip);
    ::close(sv[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        throw Broken("the ping-pong responder failed");
    }
    std::cout << "R us=" << fixed(us, 3) << std::endl;
    return 0;
}

// ---- openssl worker -----------------------------------------------------------------------

// Whether `sig` (r || s, as PKCS#11 gives it, or DER when `der`) is a valid
// ECDSA signature of `digest` by `key`.
bool verifies(EVP_PKEY* key, const Bytes& digest, const Bytes& sig, bool der = false) {
    Bytes encoded = sig;
    if (!der) {
        if (sig.size() != 64) {
            return false;
        }
        ossl::EcdsaSig s(ECDSA_SIG_new());
        BIGNUM* r = BN_bin2bn(sig.data(), 32, nullptr);
        BIGNUM* ss = BN_bin2bn(sig.data() + 32, 32, nullptr);
        if (!s || r == nullptr || ss == nullptr || ECDSA_SIG_set0(s.get(), r, ss) != 1) {
            BN_free(r);
            BN_free(ss);
            return false;
        }
        unsigned char* out = nullptr;
        const int len = i2d_ECDSA_SIG(s.get(), &out);
        if (len <= 0) {
            return false;
        }
        encoded.assign(out, out + len);
        OPENSSL_free(out);
    }
    ossl::PkeyCtx ctx(EVP_PKEY_CTX_new(key, nullptr));
    return ctx && EVP_PKEY_verify_init(ctx.get()) == 1 &&
           EVP_PKEY_verify(ctx.get(), encoded.data(), encoded.size(), digest.data(),
                           digest.size()) == 1;
}

int openssl_worker(Options& o) {
    const double seconds = o.num("seconds", 2);
    const double warmup = o.num("warmup", 0.3);
    o.done();
    ossl::Pkey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    ossl::PkeyCtx ctx(key ? EVP_PKEY_CTX_new(key.get(), nullptr) : nullptr);
    if (!ctx || EVP_PKEY_sign_init(ctx.get()) != 1) {
        throw Broken("OpenSSL: no EC P-256 key or signing context");
    }
    const Bytes digest(32, 0x5a);
    Bytes sig(128);
    auto sign = [&] {
        std::size_t len = sig.size();
        if (EVP_PKEY_sign(ctx.get(), sig.data(), &len, digest.data(), digest.size()) != 1) {
            throw Broken("EVP_PKEY_sign failed");
        }
        return len;
    };
    sig.resize(sign());
    if (!verifies(key.get(), digest, sig, true)) {
        throw Broken("OpenSSL's own signature does not verify");
    }
    sig.resize(128);
    seconds_per_op(warmup, sign);
    const double us = 1e6 * seconds_per_op(seconds, sign);
    std::cout << "R us=" << fixed(us, 3) << std::endl;
    return 0;
}

// ---- PKCS#11 worker -----------------------------------------------------------------------

// The token's EC P-256 public key (CKA_ID 01) as an OpenSSL key.
ossl::Pkey public_key(Module& m, CK_SESSION_HANDLE s) {
    static const Bytes p256_oid = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
    const CK_OBJECT_HANDLE pub = m.find(s, CKO_PUBLIC_KEY, 1);
    if (m.attribute(s, pub, CKA_EC_PARAMS) != p256_oid) {
        throw Broken("the public key is not on P-256 (CKA_EC_PARAMS)");
    }
    Bytes point = m.attribute(s, pub, CKA_EC_POINT);
    if (point.size() == 67 && point[0] == 0x04 && point[1] == 0x41) { // DER OCTET STRING
        point.erase(point.begin(), point.begin() + 2);
    }
    if (point.size() != 65 || point[0] != 0x04) {
        throw Broken("CKA_EC_POINT is not an uncompressed P-256 point");
    }
    // SubjectPublicKeyInfo: id-ecPublicKey, prime256v1, BIT STRING of the point.
    static const unsigned char spki[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
    Bytes der(sizeof spki + point.size());
    std::memcpy(der.data(), spki, sizeof spki);
    std::memcpy(der.data() + sizeof spki, point.data(), point.size());
    const unsigned char* p = der.data();
    ossl::Pkey key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
    if (!key) {
        throw Broken("OpenSSL does not take the token's public key");
    }
    return key;
}

struct Shared {
    Shared(Module& module, CK_OBJECT_HANDLE k, EVP_PKEY* p) : m(module), key(k), pub(p) {}
    Module& m;
    CK_OBJECT_HANDLE key;
    EVP_PKEY* pub;
    std::atomic<int> phase{0}; // 0 warm-up, 1 measuring, 2 stop
    std::atomic<int> ready{0};
    std::mutex lock;
    std::string error; // the first failure
    void fail(const std::string& what) {
        std::lock_guard<std::mutex> g(lock);
        if (error.empty()) {
            error = what;
        }
        phase = 2;
    }
};

// One client thread: signs until phase 2, verifying every 64th signature;
// the number of signatures completed in phase 1.
long sign_loop(Shared& sh, CK_SESSION_HANDLE s, int thread) {
    Bytes digest(32);
    Bytes sig;
    long made = 0;
    for (long i = 0; sh.phase.load(std::memory_order_relaxed) != 2; ++i) {
        CK_RV rv;
        if (i % kVerifyEvery == 0) {
            for (std::size_t b = 0; b < digest.size(); ++b) {
                digest[b] = static_cast<unsigned char>((i >> (8 * (b % 8))) + thread * 31 + b);
            }
            rv = sh.m.sign_digest(s, sh.key, digest, sig);
            if (rv == CKR_OK && !verifies(sh.pub, digest, sig)) {
                sh.fail("signature " + std::to_string(i) + " of thread " + std::to_string(thread) +
                        " does not verify with the token's public key");
                return made;
            }
        } else {
            rv = sh.m.sign_once(s, sh.key);
        }
        if (rv != CKR_OK) {
            char buf[32];
            std::snprintf(buf, sizeof buf, " (CKR 0x%lx)", static_cast<unsigned long>(rv));
            sh.fail(std::string("C_SignInit/C_Sign") + buf);
            return made;
        }
        if (sh.phase.load(std::memory_order_relaxed) == 1) {
            ++made;
        }
    }
    return made;
}

int pkcs11_worker(Options& o) {
    const std::string module = o.get("module", PKCS11_MODULE_PATH);
    const std::string token = o.get("token", "card1");
    const std::string pin = o.get("pin", Hsmsim::kPin);
    const int threads = static_cast<int>(o.num("threads", 1));
    const double seconds = o.num("seconds", 2);
    const double warmup = o.num("warmup", 0.3);
    o.done();
    Module m(module); // C_Initialize once, CKF_OS_LOCKING_OK
    const CK_SLOT_ID slot = m.slot_of(token);
    const CK_SESSION_HANDLE first = m.open(slot);
    m.login(first, pin);
    const ossl::Pkey pub = public_key(m, first);
    Shared sh(m, m.find(first, CKO_PRIVATE_KEY, 1), pub.get());
    std::vector<long> made(static_cast<std::size_t>(threads), 0);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            try {
                const CK_SESSION_HANDLE s = t == 0 ? first : m.open(slot);
                ++sh.ready;
                made[static_cast<std::size_t>(t)] = sign_loop(sh, s, t);
            } catch (const std::exception& e) {
                ++sh.ready;
                sh.fail(e.what());
            }
        });
    }
    while (sh.ready.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
    int warming = 0;
    sh.phase.compare_exchange_strong(warming, 1);
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    sh.phase = 2;
    const double took = std::chrono::duration<double>(Clock::now() - t0).count();
    for (auto& th : pool) {
        th.join();
    }
    if (!sh.error.empty()) {
        throw Broken(sh.error);
    }
    long total = 0;
    for (const long n : made) {
        total += n;
    }
    std::cout << "R ops_s=" << fixed(static_cast<double>(total) / took, 1) << std::endl;
    return 0;
}

int worker(Options& o) {
    const std::string kind = o.get("kind", "pkcs11");
    if (kind == "pingpong") {
        return pingpong_worker(o);
    }
    if (kind == "openssl") {
        return openssl_worker(o);
    }
    if (kind == "pkcs11") {
        return pkcs11_worker(o);
    }
    throw std::invalid_argument("unknown worker kind " + kind);
}

// ---- parent -------------------------------------------------------------------------------

struct Peer {
    std::string name;
    std::string metric;            // what its worker reports: "us" or "ops_s"
    std::vector<std::string> args; // worker options
    std::vector<std::string> env;
    std::vector<double> got; // per round
};

// The peers, in table order; the hsmsim services they need in `sims`.
std::vector<Peer> setup(const fs::path& dir, const std::string& softhsm, const std::string& log,
                        std::vector<std::unique_ptr<Hsmsim>>& sims) {
    std::vector<Peer> peers;
    const auto plain = child_env({});
    peers.push_back({"pingpong", "us", {"--kind", "pingpong"}, plain, {}});
    peers.push_back({"openssl", "us", {"--kind", "openssl"}, plain, {}});
    for (const int modules : {1, 3}) {
        const fs::path sub = dir / ("sim" + std::to_string(modules));
        fs::create_directory(sub);
        sims.push_back(std::make_unique<Hsmsim>(HSMSIM_PATH, sub, modules, 0));
    }
    const std::vector<std::string> module = {"--module", PKCS11_MODULE_PATH, "--token", "card1",
                                             "--pin",    Hsmsim::kPin};
    auto with = [](std::vector<std::string> args, const std::string& threads) {
        args.insert(args.end(), {"--threads", threads});
        return args;
    };
    peers.push_back(
        {"module1", "ops_s", with(module, "1"), sims[0]->env({"CKNFAST_LOADSHARING=1"}), {}});
    const bool have_softhsm =
        fs::exists(softhsm) && on_path("softhsm2-util") && on_path("pkcs11-tool");
    std::vector<std::string> soft_env;
    const std::vector<std::string> soft = {"--module", softhsm, "--token",
                                           "bench",    "--pin", kSoftPin};
    if (have_softhsm) {
        soft_env = softhsm_ec_token(dir, softhsm, "bench", kSoftPin, log);
        peers.push_back({"softhsm1", "ops_s", with(soft, "1"), soft_env, {}});
    }
    peers.push_back(
        {"module4x3", "ops_s", with(module, "4"), sims[1]->env({"CKNFAST_LOADSHARING=1"}), {}});
    if (have_softhsm) {
        peers.push_back({"softhsm4", "ops_s", with(soft, "4"), soft_env, {}});
    }
    return peers;
}

// Runs the rounds, a table row per round.
void run_rounds(std::vector<Peer>& peers, int rounds, const std::string& seconds,
                const std::string& warmup, const std::string& log) {
    const std::string self = self_exe();
    std::printf("%-6s", "round");
    for (const auto& p : peers) {
        std::printf(" %14s", (p.name + (p.metric == "us" ? " us" : " op/s")).c_str());
    }
    std::printf("\n");
    std::fflush(stdout);
    for (int r = 0; r < rounds; ++r) {
        for (std::size_t k = 0; k < peers.size(); ++k) {
            Peer& p = peers[(k + static_cast<std::size_t>(r)) % peers.size()];
            std::vector<std::string> args = {self,    "worker",   "--seconds",
                                             seconds, "--warmup", warmup};
            args.insert(args.end(), p.args.begin(), p.args.end());
            p.got.push_back(number(worker_pairs(args, p.env, log, p.name), p.metric));
        }
        std::printf("%-6d", r + 1);
        for (const auto& p : peers) {
            std::printf(" %14.*f", p.metric == "us" ? 2 : 0, p.got.back());
        }
        std::printf("\n");
        std::fflush(stdout);
    }
}

void report(const std::vector<Peer>& peers, int rounds, const std::string& seconds,
            double load_before) {
    std::map<std::string, double> med;
    for (const auto& p : peers) {
        med[p.name] = median(p.got);
    }
    auto has = [&](const std::string& name) { return med.count(name) != 0u && med[name] > 0; };
    auto field = [&](const std::string& name, int decimals) {
        return has(name) ? fixed(med[name], decimals) : std::string("na");
    };
    const double limit = 1e6 / (med["pingpong"] + med["openssl"]);
    const double vs_limit = med["module1"] / limit;
    const std::string met1 = med["module1"] >= limit / kLimitSlack ? "yes" : "no";
    const bool soft = has("softhsm4");
    const double vs_soft = soft ? med["module4x3"] / med["softhsm4"] : 0.0;
    const std::string met2 = !soft ? "unknown" : vs_soft >= kTarget2 ? "yes" : "no";

    std::printf("\nmedians over %d rounds of %s s, CKM_ECDSA P-256\n", rounds, seconds.c_str());
    std::printf("  pingpong round trip (120 B / 90 B)  %10.2f us\n", med["pingpong"]);
    std::printf("  OpenSSL sign in-process             %10.2f us\n", med["openssl"]);
    std::printf("  limit = 1e6 / (sum)                 %10.0f op/s\n", limit);
    std::printf("%-10s %8s %12s\n", "peer", "threads", "op/s");
    for (const auto& [name, threads] : std::vector<std::pair<std::string, int>>{
             {"module1", 1}, {"softhsm1", 1}, {"module4x3", 4}, {"softhsm4", 4}}) {
        std::printf("%-10s %8d %12s\n", name.c_str(), threads, field(name, 0).c_str());
    }
    std::printf("target 1: module1 >= limit / %.2f: %s (module1 / limit = %.2f)\n", kLimitSlack,
                met1.c_str(), vs_limit);
    std::printf("target 2: module4x3 >= %.1f x softhsm4: %s (module4x3 / softhsm4 = %s)\n",
                kTarget2, met2.c_str(), soft ? fixed(vs_soft, 2).c_str() : "na");
    std::printf("load average (1 min): %.2f before, %.2f after; %ld cores\n", load_before,
                loadavg1(), ::sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("RESULT pingpong_us=%s openssl_sign_us=%s limit_ops=%s module1_ops=%s "
                "module1_vs_limit=%s softhsm1_ops=%s module4x3_ops=%s softhsm4_ops=%s "
                "module4x3_vs_softhsm4=%s target1=module1>=limit/1.05 met1=%s "
                "target2=module4x3>=1.3*softhsm4 met2=%s\n",
                fixed(med["pingpong"], 2).c_str(), fixed(med["openssl"], 2).c_str(),
                fixed(limit, 0).c_str(), field("module1", 0).c_str(), fixed(vs_limit, 2).c_str(),
                field("softhsm1", 0).c_str(), field("module4x3", 0).c_str(),
                field("softhsm4", 0).c_str(), soft ? fixed(vs_soft, 2).c_str() : "na", met1.c_str(),
                met2.c_str());
}

int parent(Options& o) {
    const int rounds = static_cast<int>(o.num("rounds", 5));
    const std::string seconds = o.get("seconds", "2");
    const std::string warmup = o.get("warmup", "0.3");
    const std::string softhsm = o.get("softhsm", "/usr/lib/softhsm/libsofthsm2.so");
    o.done();
    auto positive = [](const std::string& text, bool zero_too) {
        char* end = nullptr;
        const double v = std::strtod(text.c_str(), &end);
        return end != text.c_str() && *end == '\0' && (v > 0 || (zero_too && v == 0));
    };
    if (rounds < 1 || !positive(seconds, false) || !positive(warmup, true)) {
        throw std::invalid_argument("--rounds wants >= 1, --seconds > 0, --warmup >= 0");
    }
    TempDir dir;
    const std::string log = (dir.path() / "setup.log").string();
    std::vector<std::unique_ptr<Hsmsim>> sims;
    auto peers = setup(dir.path(), softhsm, log, sims);
    const double load_before = loadavg1();
    run_rounds(peers, rounds, seconds, warmup, log);
    for (auto& sim : sims) {
        sim->stop();
    }
    report(peers, rounds, seconds, load_before);
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    return worker_parent_main("bench_pkcs11_sign", argc, argv, worker, parent);
}
