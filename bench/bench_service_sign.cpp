// bench_service_sign: what does signing through hsmsim cost, compared with
// signing in-process?
//
// Starts `hsmsim serve` (HSMSIM_PATH) with 1 module and no simulated latency
// on sockets in a private temp directory (bench_support.hpp's Hsmsim), generates a session EC P-256
// key, and signs SHA-256 digests through SimClient in one thread for a fixed time. The baseline
// signs the same digests in-process with OpenSSL (EVP_PKEY_sign on a P-256 key, one context reused:
// the cheapest in-process path). Each side runs 3 times, interleaved, and the medians are reported
// with their ratio, as a table and as one line:
//   RESULT service_ops=<ops/s> inproc_ops=<ops/s> ratio=<service/inproc>
// Exit status: 0 when it measured (whatever the figures), 1 when something
// broke (service would not start, a signature did not verify), 2 bad usage.

#include "bench_support.hpp"
#include "preloadrun/common/error.hpp"
#include "preloadrun/common/ossl.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string>
#include <vector>

using namespace bench_support;
using namespace preloadrun;
using namespace preloadrun::hsm;

namespace {

constexpr int kRounds = 3;
constexpr std::size_t kDigests = 64;

// ---- OpenSSL -----------------------------------------------------------------------

using preloadrun::ossl::Pkey;
using preloadrun::ossl::PkeyCtx;

std::vector<Bytes> make_digests() {
    std::vector<Bytes> out;
    for (std::size_t i = 0; i < kDigests; ++i) {
        const std::string msg = "bench message " + std::to_string(i);
        Bytes d(32);
        unsigned int len = 0;
        if (EVP_Digest(msg.data(), msg.size(), d.data(), &len, EVP_sha256(), nullptr) != 1) {
            throw Broken("EVP_Digest failed");
        }
        out.push_back(std::move(d));
    }
    return out;
}

// Checks an r||s signature of the service against its public key.
void verify_service_signature(const Bytes& public_der, const Bytes& dgst, const Bytes& rs) {
    const unsigned char* p = public_der.data();
    Pkey key(d2i_PUBKEY(nullptr, &p, static_cast<long>(public_der.size())));
    if (!key || rs.size() != 64)
        throw Broken("the service's key or signature is malformed");
    ECDSA_SIG* sig = ECDSA_SIG_new();
    ECDSA_SIG_set0(sig, BN_bin2bn(rs.data(), 32, nullptr), BN_bin2bn(rs.data() + 32, 32, nullptr));
    unsigned char* der = nullptr;
    const int len = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    PkeyCtx ctx(EVP_PKEY_CTX_new(key.get(), nullptr));
    const bool ok = len > 0 && EVP_PKEY_verify_init(ctx.get()) == 1 &&
                    EVP_PKEY_verify(ctx.get(), der, static_cast<std::size_t>(len), dgst.data(),
                                    dgst.size()) == 1;
    OPENSSL_free(der);
    if (!ok)
        throw Broken("a signature made by the service does not verify");
}

class InProcess {
public:
    InProcess() : key_(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")) {
        if (!key_)
            throw Broken("EC P-256 key generation failed");
        ctx_.reset(EVP_PKEY_CTX_new(key_.get(), nullptr));
        if (!ctx_ || EVP_PKEY_sign_init(ctx_.get()) != 1)
            throw Broken("EVP_PKEY_sign_init failed");
        // Self-check: what it signs verifies.
        Bytes d(32, 7);
        sign(d);
        PkeyCtx v(EVP_PKEY_CTX_new(key_.get(), nullptr));
        if (EVP_PKEY_verify_init(v.get()) != 1 ||
            EVP_PKEY_verify(v.get(), sig_, siglen_, d.data(), d.size()) != 1) {
            throw Broken("in-process signature does not verify");
        }
    }
    void sign(const Bytes& dgst) {
        siglen_ = sizeof sig_;
        if (EVP_PKEY_sign(ctx_.get(), sig_, &siglen_, dgst.data(), dgst.size()) != 1) {
            throw Broken("EVP_PKEY_sign failed");
        }
    }

private:
    Pkey key_;
    PkeyCtx ctx_;
    unsigned char sig_[128] = {};
    std::size_t siglen_ = 0;
};

// ---- measuring -----------------------------------------------------------------------

template <class F>
double ops_per_second(double seconds, const std::vector<Bytes>& digests, F&& sign_one) {
    const auto duration = std::chrono::duration<double>(seconds);
    const auto start = Clock::now();
    const auto end = start + std::chrono::duration_cast<Clock::duration>(duration);
    std::uint64_t ops = 0;
    auto now = start;
    do {
        sign_one(digests[ops % digests.size()]);
        ++ops;
        now = Clock::now();
    } while (now < end);
    return static_cast<double>(ops) / std::chrono::duration<double>(now - start).count();
}

void usage(std::FILE* to) {
    std::fprintf(to,
                 "usage: bench_service_sign [--seconds N]\n"
                 "  Signs SHA-256 digests with an EC P-256 key through hsmsim (1 module,\n"
                 "  no latency) and in-process with OpenSSL, %d rounds of N seconds each\n"
                 "  (default 3), and reports the median ops/s of each and their ratio.\n",
                 kRounds);
}

int run(double seconds) {
    const auto digests = make_digests();
    TempDir dir;
    Hsmsim service(HSMSIM_PATH, dir.path(), 1, 0);
    SimClient client(Endpoint{service.socket(), std::chrono::milliseconds(10000), "bench"});
    KeySpec spec;
    spec.type = KeyType::ec_p256;
    spec.label = "bench";
    spec.persistent = false;
    const auto key = client.generate_key(1, spec);
    Mechanism mech;
    mech.kind = MechanismKind::ecdsa;
    verify_service_signature(key.key.public_der, digests[0],
                             client.sign(1, key.handle, mech, digests[0]));
    InProcess inproc;

    std::vector<double> svc, loc;
    for (int r = 0; r < kRounds; ++r) {
        svc.push_back(ops_per_second(seconds, digests,
                                     [&](const Bytes& d) { client.sign(1, key.handle, mech, d); }));
        loc.push_back(ops_per_second(seconds, digests, [&](const Bytes& d) { inproc.sign(d); }));
    }
    const double svc_med = median(svc);
    const double loc_med = median(loc);
    const double ratio = loc_med > 0 ? svc_med / loc_med : 0;

    std::printf("bench_service_sign: ECDSA P-256 signatures of SHA-256 digests, 1 thread,\n"
                "%d interleaved rounds of %.2f s per side (hsmsim: 1 module, 0 ms latency)\n\n",
                kRounds, seconds);
    std::printf("%-8s %18s %18s\n", "round", "service ops/s", "in-process ops/s");
    for (int r = 0; r < kRounds; ++r) {
        std::printf("%-8d %18.0f %18.0f\n", r + 1, svc[static_cast<std::size_t>(r)],
                    loc[static_cast<std::size_t>(r)]);
    }
    std::printf("%-8s %18.0f %18.0f\n", "median", svc_med, loc_med);
    std::printf("\nratio service / in-process: %.3f (%.1f us per signature through the "
                "service, %.1f us in-process)\n",
                ratio, svc_med > 0 ? 1e6 / svc_med : 0.0, loc_med > 0 ? 1e6 / loc_med : 0.0);
    std::printf("RESULT service_ops=%.0f inproc_ops=%.0f ratio=%.4f\n", svc_med, loc_med, ratio);
    std::fflush(stdout);

    if (!service.stop())
        throw Broken("hsmsim serve did not exit 0 on SIGTERM\n" + service.log());
    if (svc_med <= 0 || loc_med <= 0)
        throw Broken("no signature was made");
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    double seconds = 3.0;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            usage(stdout);
            return 0;
        }
        if (arg == "--seconds" && i + 1 < argc) {
            char* end = nullptr;
            seconds = std::strtod(argv[++i], &end);
            if (end == argv[i] || *end != '\0' || !(seconds > 0) || seconds > 3600) {
                std::fprintf(stderr, "bench_service_sign: --seconds wants a number in (0, 3600]\n");
                return 2;
            }
            continue;
        }
        std::fprintf(stderr, "bench_service_sign: unknown argument '%s'\n", arg.c_str());
        usage(stderr);
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    try {
        return run(seconds);
    } catch (const preloadrun::Error& e) {
        std::fprintf(stderr, "bench_service_sign: %s (%s)\n", e.what(),
                     std::string(preloadrun::to_string(e.code())).c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "bench_service_sign: %s\n", e.what());
    }
    return 1;
}
