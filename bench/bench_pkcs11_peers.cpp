// bench_pkcs11_peers: ECDSA P-256 signatures per second, one thread, the same
// client loop (C_SignInit + C_Sign, CKM_ECDSA on a 32-byte digest) through
//   module   libpreloadrun-pkcs11.so (PKCS11_MODULE_PATH) to `hsmsim serve`
//            (HSMSIM_PATH; 1 module, no simulated latency), CKNFAST_LOADSHARING=1;
//   softhsm  SoftHSM2 loaded directly (in-process software token);
//   p11kit   p11-kit-client.so talking to `p11-kit server` which serves
//            SoftHSM2 (an RPC hop over a unix socket, like ours to hsmsim).
// Target: the module at least as fast as p11kit.
//
// Each peer is set up in a private temp directory (SoftHSM2 with its own
// SOFTHSM2_CONF and token directory, its token made with softhsm2-util and
// its key with pkcs11-tool). Each measurement is a worker child of this
// program (dlopen, C_Initialize, login, warm-up, then S seconds of signing);
// each worker first checks that one signature verifies with the peer's public
// key; rounds run the peers in rotating order, and the report gives the median
// ops/s per peer and the ratios module/softhsm and module/p11kit:
//   RESULT module_ops=.. softhsm_ops=.. p11kit_ops=.. module_vs_softhsm=..
//          module_vs_p11kit=.. target=module>=p11kit met=yes|no
// A peer that is not installed is reported as "na" (and the target as
// unknown). Exit status: 0 when it measured (whatever the figures), 1 when
// something broke, 2 bad usage.
//
//   bench_pkcs11_peers [--rounds 5] [--seconds 2] [--warmup 0.3]
//       [--softhsm /usr/lib/softhsm/libsofthsm2.so]
//       [--p11kit-client /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so]

#include "pkcs11_bench.hpp"

#include <fstream>
#include <iostream>

using namespace pkcs11_bench;

namespace {

constexpr const char* kSoftPin = "1234";

int worker(Options& o) {
    const std::string module = o.get("module", PKCS11_MODULE_PATH);
    const std::string token = o.get("token", "card1");
    const std::string pin = o.get("pin", Hsmsim::kPin);
    const double seconds = o.num("seconds", 2);
    const double warmup = o.num("warmup", 0.3);
    o.done();
    Module m(module);
    const CK_SESSION_HANDLE s = m.open(m.slot_of(token));
    m.login(s, pin);
    const CK_OBJECT_HANDLE key = m.find(s, CKO_PRIVATE_KEY, 1);
    m.self_check(s, key); // the peer makes signatures that verify with its public key
    auto sign = [&] { Module::check(m.sign_once(s, key), "C_SignInit/C_Sign"); };
    seconds_per_op(warmup, sign);
    std::cout << "R ops_s=" << fixed(1.0 / seconds_per_op(seconds, sign), 1) << std::endl;
    return 0;
}

struct Peer {
    std::string name;
    std::vector<std::string> args; // worker options
    std::vector<std::string> env;
    std::vector<double> ops;
};

bool exists(const std::string& path) {
    return !path.empty() && fs::exists(path);
}

int parent(Options& o) {
    const int rounds = static_cast<int>(o.num("rounds", 5));
    const std::string seconds = o.get("seconds", "2");
    const std::string warmup = o.get("warmup", "0.3");
    const std::string softhsm = o.get("softhsm", "/usr/lib/softhsm/libsofthsm2.so");
    const std::string client =
        o.get("p11kit-client", "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so");
    o.done();
    const std::string self = self_exe();
    TempDir dir;
    const std::string log = (dir.path() / "setup.log").string();

    fs::create_directory(dir.path() / "sim");
    Hsmsim sim(HSMSIM_PATH, dir.path() / "sim", 1, 0);
    std::vector<Peer> peers;
    peers.push_back(
        {"module", {"--module", PKCS11_MODULE_PATH}, sim.env({"CKNFAST_LOADSHARING=1"}), {}});

    // SoftHSM2, its own configuration and token directory.
    std::unique_ptr<Child> server;
    const bool have_softhsm = exists(softhsm) && on_path("softhsm2-util") && on_path("pkcs11-tool");
    const bool have_p11kit = have_softhsm && exists(client) && on_path("p11-kit");
    if (have_softhsm) {
        const auto env = softhsm_ec_token(dir.path(), softhsm, "bench", kSoftPin, log);
        const std::vector<std::string> who = {"--token", "bench", "--pin", kSoftPin};
        std::vector<std::string> args = {"--module", softhsm};
        args.insert(args.end(), who.begin(), who.end());
        peers.push_back({"softhsm", args, env, {}});
        if (have_p11kit) {
            const std::string sock = (dir.path() / "p11kit.sock").string();
            server = std::make_unique<Child>(
                std::vector<std::string>{"p11-kit", "server", "-f", "-s", "--provider", softhsm,
                                         "-n", sock, "pkcs11:token=bench"},
                env, log);
            const auto deadline = Clock::now() + std::chrono::seconds(10);
            while (!fs::exists(sock)) {
                if (Clock::now() > deadline) {
                    throw Broken("p11-kit server did not create " + sock);
                }
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
            args = {"--module", client};
            args.insert(args.end(), who.begin(), who.end());
            peers.push_back({"p11kit",
                             args,
                             child_env({"SOFTHSM2_CONF=" + (dir.path() / "softhsm2.conf").string(),
                                        "P11_KIT_SERVER_ADDRESS=unix:path=" + sock}),
                             {}});
        }
    }

    const double load_before = loadavg1();
    std::printf("%-6s", "round");
    for (const auto& p : peers) {
        std::printf(" %12s", (p.name + " op/s").c_str());
    }
    std::printf("\n");
    for (int r = 0; r < rounds; ++r) {
        std::vector<double> got(peers.size());
        for (std::size_t k = 0; k < peers.size(); ++k) {
            const std::size_t i = (k + static_cast<std::size_t>(r)) % peers.size();
            Peer& p = peers[i];
            std::vector<std::string> args = {self,    "worker",   "--seconds",
                                             seconds, "--warmup", warmup};
            args.insert(args.end(), p.args.begin(), p.args.end());
            Child c(args, p.env, log);
            auto [status, out] = c.finish();
            const auto at = out.rfind("R ");
            if (status != 0 || at == std::string::npos) {
                std::ifstream in(log);
                throw Broken("worker for " + p.name + " exited " + std::to_string(status) + ": " +
                             out + std::string((std::istreambuf_iterator<char>(in)), {}));
            }
            got[i] = number(parse_pairs(out.substr(at + 2)), "ops_s");
            p.ops.push_back(got[i]);
        }
        std::printf("%-6d", r + 1);
        for (const double v : got) {
            std::printf(" %12.0f", v);
        }
        std::printf("\n");
        std::fflush(stdout);
    }
    if (server) {
        server->stop();
    }
    sim.stop();

    std::map<std::string, double> med;
    for (const auto& p : peers) {
        med[p.name] = median(p.ops);
    }
    auto field = [&](const std::string& name) {
        return med.count(name) != 0u ? fixed(med[name], 0) : std::string("na");
    };
    auto ratio = [&](const std::string& name) {
        return med.count(name) != 0u && med[name] > 0 ? fixed(med["module"] / med[name], 2)
                                                      : std::string("na");
    };
    std::printf("\nmedians over %d rounds of %s s, one thread, CKM_ECDSA P-256\n", rounds,
                seconds.c_str());
    std::printf("%-10s %12s %16s\n", "peer", "ops/s", "module / peer");
    for (const auto& p : peers) {
        std::printf("%-10s %12.0f %16s\n", p.name.c_str(), med[p.name], ratio(p.name).c_str());
    }
    std::printf("load average (1 min): %.2f before, %.2f after; %ld cores\n", load_before,
                loadavg1(), ::sysconf(_SC_NPROCESSORS_ONLN));
    const std::string met =
        med.count("p11kit") != 0u ? (med["module"] >= med["p11kit"] ? "yes" : "no") : "unknown";
    std::printf("target: module >= p11kit: %s\n", met.c_str());
    std::printf("RESULT module_ops=%s softhsm_ops=%s p11kit_ops=%s module_vs_softhsm=%s "
                "module_vs_p11kit=%s target=module>=p11kit met=%s\n",
                field("module").c_str(), field("softhsm").c_str(), field("p11kit").c_str(),
                ratio("softhsm").c_str(), ratio("p11kit").c_str(), met.c_str());
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    return worker_parent_main("bench_pkcs11_peers", argc, argv, worker, parent);
}
