// bench_pkcs11_members: ECDSA P-256 signatures per second over real PKCS#11
// tokens, with 1 and 4 client threads, the same client loop (C_SignInit +
// C_Sign, CKM_ECDSA on a 32-byte digest, one session per thread) through
//   member1  libpreloadrun-pkcs11.so -> `hsmsim serve --fleet` with one
//            member -> the member's worker -> SoftHSM2 (loaded in the worker);
//   member3  the same with three members (three SoftHSM2 tokens holding the
//            same key), load-shared;
//   p11kit   p11-kit-client.so -> `p11-kit server` -> SoftHSM2 (the other way
//            to reach a token in another process);
//   softhsm  SoftHSM2 in-process.
// Targets: member1 >= p11kit (1 thread and 4 threads); member3 > member1 at
// 4 threads. Also the time one signature adds through the service and the
// worker, from the one-thread figures: 1/member1 - 1/softhsm.
//
// Each token has its own SOFTHSM2_CONF and token directory; the key is made
// once with openssl and imported into every token (softhsm2-util --import).
// Each measurement is a worker child of this program (dlopen, C_Initialize,
// login, warm-up, then S seconds of signing on T threads); each first checks
// that one signature verifies with the token's public key. Rounds run the
// peers in rotating order; the report gives medians and:
//   RESULT member1_1t=.. p11kit_1t=.. softhsm_1t=.. member1_4t=.. member3_4t=..
//          p11kit_4t=.. hop_us=.. member1_vs_p11kit_1t=.. member1_vs_p11kit_4t=..
//          member3_vs_member1_4t=.. met=yes|no|unknown
// Exit status: 0 when it measured (whatever the figures), 1 when something
// broke, 2 bad usage.
//
//   bench_pkcs11_members [--rounds 3] [--seconds 2] [--warmup 0.3]
//       [--softhsm /usr/lib/softhsm/libsofthsm2.so]
//       [--p11kit-client /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so]

#include "pkcs11_bench.hpp"

#include <atomic>
#include <fstream>
#include <iostream>
#include <thread>

using namespace pkcs11_bench;

namespace {

constexpr const char* kPin = "1234";

int worker(Options& o) {
    const std::string module = o.get("module", PKCS11_MODULE_PATH);
    const std::string token = o.get("token", "signing");
    const int threads = static_cast<int>(o.num("threads", 1));
    const double seconds = o.num("seconds", 2);
    const double warmup = o.num("warmup", 0.3);
    o.done();
    Module m(module);
    const CK_SLOT_ID slot = m.slot_of(token);
    const CK_SESSION_HANDLE first = m.open(slot);
    m.login(first, kPin);
    const CK_OBJECT_HANDLE key = m.find(first, CKO_PRIVATE_KEY, 1);
    m.self_check(first, key);
    std::atomic<long> made{0};
    std::atomic<int> phase{0}; // 0 warm-up, 1 measuring, 2 done
    std::atomic<bool> failed{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            const CK_SESSION_HANDLE s = t == 0 ? first : m.open(slot);
            while (phase.load() < 2) {
                for (int i = 0; i < 8; ++i) {
                    if (m.sign_once(s, key) != CKR_OK) {
                        failed = true;
                        return;
                    }
                }
                if (phase.load() == 1) {
                    made += 8;
                }
            }
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
    phase = 1;
    const auto t0 = Clock::now();
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    const long n = made.load();
    const double took = std::chrono::duration<double>(Clock::now() - t0).count();
    phase = 2;
    for (auto& th : pool) {
        th.join();
    }
    if (failed) {
        throw Broken("a signature failed");
    }
    std::cout << "R ops_s=" << fixed(static_cast<double>(n) / took, 1) << std::endl;
    return 0;
}

struct Peer {
    std::string name;
    std::vector<std::string> args;
    std::vector<std::string> env;
    int threads = 1;
    std::vector<double> ops;
};

// One SoftHSM2 token in `dir`, labelled `label`, holding the key of `pem`
// under CKA_ID 01; its SOFTHSM2_CONF.
std::string softhsm_token(const fs::path& dir, const std::string& label, const fs::path& pem,
                          const std::string& log) {
    const fs::path tokens = dir / label;
    fs::create_directories(tokens);
    const fs::path conf = dir / (label + ".conf");
    write_file(conf, "directories.tokendir = " + tokens.string() +
                         "\nobjectstore.backend = file\nlog.level = ERROR\n");
    const auto env = child_env({"SOFTHSM2_CONF=" + conf.string()});
    run_ok({"softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", "12345678",
            "--pin", kPin},
           env, log);
    run_ok({"softhsm2-util", "--import", pem.string(), "--token", label, "--label", "k1", "--id",
            "01", "--pin", kPin},
           env, log);
    return conf.string();
}

// `hsmsim serve --fleet` over the tokens whose configurations are `confs`.
std::unique_ptr<Child> serve_members(const fs::path& dir, const std::string& softhsm,
                                     const std::vector<std::string>& confs,
                                     std::vector<std::string>& env, const std::string& log) {
    fs::create_directories(dir);
    std::string text = "[defaults]\nlibrary = \"" + softhsm + "\"\ntimeout = \"10s\"\n\n";
    std::string members;
    for (std::size_t i = 0; i < confs.size(); ++i) {
        const std::string name = "m" + std::to_string(i + 1);
        text += "[member." + name + "]\ntoken = { label = \"t" + std::to_string(i + 1) +
                "\" }\nenv = { SOFTHSM2_CONF = \"" + confs[i] + "\" }\n\n";
        members += (members.empty() ? "\"" : ", \"") + name + "\"";
    }
    text += "[set.signing]\nmembers = [" + members + "]\n";
    const fs::path config = dir / "fleet.toml";
    write_file(config, text);
    ::chmod(config.c_str(), 0600);
    env = child_env({"HSMSIM_SOCKET=" + (dir / "c.sock").string(),
                     "HSMSIM_ADMIN_SOCKET=" + (dir / "a.sock").string(), "CKNFAST_LOADSHARING=1",
                     "LC_ALL=C"},
                    {"NFAST_KMDATA", "CKNFAST_RELOAD_KEYS", "NFAST_NFKM_TOKENSFILE",
                     "NOTIFY_SOCKET", "SOFTHSM2_CONF"});
    auto child =
        std::make_unique<Child>(std::vector<std::string>{HSMSIM_PATH, "serve", "--fleet",
                                                         config.string(), "--init-delay-ms", "0"},
                                env, log);
    std::string line;
    if (!child->read_line(line, std::chrono::seconds(30)) ||
        line.rfind("hsmsim: ready: ", 0) != 0) {
        child->stop();
        throw Broken("hsmsim serve --fleet printed no ready line (got '" + line + "')");
    }
    return child;
}

std::vector<Peer> setup(const fs::path& dir, const std::string& softhsm, const std::string& client,
                        const std::string& log, std::vector<std::unique_ptr<Child>>& servers) {
    const fs::path pem = dir / "key.pem";
    run_ok({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
            pem.string()},
           child_env({}), log);
    std::vector<std::string> confs;
    for (int i = 1; i <= 3; ++i) {
        confs.push_back(softhsm_token(dir / "tokens", "t" + std::to_string(i), pem, log));
    }
    std::vector<Peer> peers;
    std::vector<std::string> env1;
    std::vector<std::string> env3;
    servers.push_back(serve_members(dir / "one", softhsm, {confs[0]}, env1, log));
    servers.push_back(serve_members(dir / "three", softhsm, confs, env3, log));
    const std::vector<std::string> module = {"--module", PKCS11_MODULE_PATH, "--token", "signing"};
    const std::vector<std::string> soft = {"--module", softhsm, "--token", "t1"};
    const std::string sock = (dir / "p11kit.sock").string();
    const auto softenv = child_env({"SOFTHSM2_CONF=" + confs[0]});
    servers.push_back(std::make_unique<Child>(
        std::vector<std::string>{"p11-kit", "server", "-f", "-s", "--provider", softhsm, "-n", sock,
                                 "pkcs11:token=t1"},
        softenv, log));
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (!fs::exists(sock)) {
        if (Clock::now() > deadline) {
            throw Broken("p11-kit server did not create " + sock);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const std::vector<std::string> remote = {"--module", client, "--token", "t1"};
    const auto remote_env = child_env({"P11_KIT_SERVER_ADDRESS=unix:path=" + sock});
    for (int threads : {1, 4}) {
        peers.push_back({"member1", module, env1, threads, {}});
        peers.push_back({"member3", module, env3, threads, {}});
        peers.push_back({"p11kit", remote, remote_env, threads, {}});
        peers.push_back({"softhsm", soft, softenv, threads, {}});
    }
    return peers;
}

double measure(Peer& p, const std::string& self, const std::string& seconds,
               const std::string& warmup, const std::string& log) {
    std::vector<std::string> args = {self,       "worker", "--seconds", seconds,
                                     "--warmup", warmup,   "--threads", std::to_string(p.threads)};
    args.insert(args.end(), p.args.begin(), p.args.end());
    Child c(args, p.env, log);
    auto [status, out] = c.finish();
    const auto at = out.rfind("R ");
    if (status != 0 || at == std::string::npos) {
        std::ifstream in(log);
        throw Broken("worker for " + p.name + " exited " + std::to_string(status) + ": " + out +
                     std::string((std::istreambuf_iterator<char>(in)), {}));
    }
    return number(parse_pairs(out.substr(at + 2)), "ops_s");
}

int parent(Options& o) {
    const int rounds = static_cast<int>(o.num("rounds", 3));
    const std::string seconds = o.get("seconds", "2");
    const std::string warmup = o.get("warmup", "0.3");
    const std::string softhsm = o.get("softhsm", "/usr/lib/softhsm/libsofthsm2.so");
    const std::string client =
        o.get("p11kit-client", "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so");
    o.done();
    if (!fs::exists(softhsm) || !fs::exists(client)) {
        std::printf("RESULT softhsm or p11-kit's client is not installed: nothing measured\n");
        return 0;
    }
    TempDir dir;
    const std::string log = (dir.path() / "setup.log").string();
    std::vector<std::unique_ptr<Child>> servers;
    auto peers = setup(dir.path(), softhsm, client, log, servers);
    const double load_before = loadavg1();
    for (int r = 0; r < rounds; ++r) {
        for (std::size_t k = 0; k < peers.size(); ++k) {
            auto& p = peers[(k + static_cast<std::size_t>(r)) % peers.size()];
            p.ops.push_back(measure(p, self_exe(), seconds, warmup, log));
        }
    }
    for (auto& s : servers) {
        s->stop();
    }
    std::map<std::string, double> med;
    std::printf("medians over %d rounds of %s s, CKM_ECDSA P-256, signatures/s\n", rounds,
                seconds.c_str());
    std::printf("%-10s %12s %12s\n", "peer", "1 thread", "4 threads");
    for (const auto* name : {"member1", "member3", "p11kit", "softhsm"}) {
        for (const auto& p : peers) {
            if (p.name == name) {
                med[p.name + "_" + std::to_string(p.threads) + "t"] = median(p.ops);
            }
        }
        std::printf("%-10s %12.0f %12.0f\n", name, med[std::string(name) + "_1t"],
                    med[std::string(name) + "_4t"]);
    }
    const double hop_us = 1e6 / med["member1_1t"] - 1e6 / med["softhsm_1t"];
    const double r1 = med["member1_1t"] / med["p11kit_1t"];
    const double r4 = med["member1_4t"] / med["p11kit_4t"];
    const double r3 = med["member3_4t"] / med["member1_4t"];
    std::printf("a signature through the service and the worker adds %.1f us to SoftHSM2's own\n",
                hop_us);
    std::printf("member1 / p11kit: %.2f (1 thread), %.2f (4 threads); member3 / member1 at 4 "
                "threads: %.2f\n",
                r1, r4, r3);
    std::printf("load average (1 min): %.2f before, %.2f after; %ld cores\n", load_before,
                loadavg1(), ::sysconf(_SC_NPROCESSORS_ONLN));
    const bool met = r1 >= 1.0 && r4 >= 1.0 && r3 > 1.0;
    std::printf("RESULT member1_1t=%s p11kit_1t=%s softhsm_1t=%s member1_4t=%s member3_4t=%s "
                "p11kit_4t=%s hop_us=%s member1_vs_p11kit_1t=%s member1_vs_p11kit_4t=%s "
                "member3_vs_member1_4t=%s met=%s\n",
                fixed(med["member1_1t"], 0).c_str(), fixed(med["p11kit_1t"], 0).c_str(),
                fixed(med["softhsm_1t"], 0).c_str(), fixed(med["member1_4t"], 0).c_str(),
                fixed(med["member3_4t"], 0).c_str(), fixed(med["p11kit_4t"], 0).c_str(),
                fixed(hop_us, 1).c_str(), fixed(r1, 2).c_str(), fixed(r4, 2).c_str(),
                fixed(r3, 2).c_str(), met ? "yes" : "no");
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    return worker_parent_main("bench_pkcs11_members", argc, argv, worker, parent);
}
