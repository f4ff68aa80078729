// bench_pkcs11_loadsharing: with N modules of fixed latency, does the module
// (CKNFAST_LOADSHARING=1) sign close to N times as fast as one module?
// Target: >= 90% of the ideal N x (1000 / latency) ops/s
// at every N, up to 32 modules.
//
// For each N (default 1 2 4 8 16 32): starts `hsmsim serve --modules N
// --op-latency-ms L` (HSMSIM_PATH, default L = 2) in a private temp
// directory with softcard card1 holding EC P-256 key "eck", then runs itself
// as a worker child: it dlopens the module (PKCS11_MODULE_PATH), logs in,
// starts T = 2N+2 threads (each its own session) signing in a loop
// (C_SignInit + C_Sign, CKM_ECDSA, 32-byte digest), warms up, and counts
// signatures for S seconds (default 3). Around that window the parent reads
// hsmsim's per-module ops counters (admin socket) and the CPU time of hsmsim
// and of the worker (/proc/PID/stat).
// Baselines in the same run: the ideal N x 1000/L, and N x the rate measured
// at N=1 (what one module really gives with this client). hsmsim serialises
// each module's operations (sleep L, then sign), so a busy module takes L plus
// hsmsim's own overhead per operation; the "ms/op/mod" column shows it, and
// %N*n1 separates the load-sharing from that ceiling.
//
// Prints a table and one line:
//   RESULT latency_ms=2 n1_ops=.. n1_pct=.. n2_ops=.. ... min_pct=.. target_pct=90 met=yes|no
// Exit status: 0 when it measured (whatever the figures), 1 when something
// broke (including a module that served nothing, or signing errors),
// 2 bad usage.
//
//   bench_pkcs11_loadsharing [--modules 1,2,4,8,16,32] [--latency-ms 2] [--seconds 3]
//       [--warmup 0.5] [--threads-per-module 2]

#include "pkcs11_bench.hpp"
#include "preloadrun/hsm/sim_client.hpp"

#include <atomic>
#include <fstream>
#include <iostream>
#include <sys/resource.h>

using namespace pkcs11_bench;
namespace pr = preloadrun;

namespace {

constexpr double kTargetPct = 90.0;

double cpu_self() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
           static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

// Worker: prints "measuring" when the window opens, then the result line.
int worker(Options& o) {
    const std::string module = o.get("module", PKCS11_MODULE_PATH);
    const int threads = static_cast<int>(o.num("threads", 4));
    const double seconds = o.num("seconds", 3);
    const double warmup = o.num("warmup", 0.5);
    o.done();
    Module m(module);
    const CK_SLOT_ID slot = m.slot_of("card1");
    const CK_SESSION_HANDLE login = m.open(slot);
    m.login(login, Hsmsim::kPin);

    std::atomic<int> phase{0}; // 0 warm-up, 1 measuring, 2 stop
    std::atomic<int> ready{0};
    std::atomic<long> errors{0};
    std::atomic<CK_RV> first_error{CKR_OK};
    std::vector<long> counts(static_cast<std::size_t>(threads), 0);
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            const CK_SESSION_HANDLE s = m.open(slot);
            const CK_OBJECT_HANDLE key = m.find(s, CKO_PRIVATE_KEY, 1);
            ++ready;
            long n = 0;
            // Counts the signatures that completed inside the window: unbiased
            // at both ends (what was in flight at the start counts, what ends
            // after the stop does not).
            while (phase.load(std::memory_order_relaxed) != 2) {
                const CK_RV rv = m.sign_once(s, key);
                if (rv != CKR_OK) {
                    CK_RV none = CKR_OK;
                    first_error.compare_exchange_strong(none, rv);
                    ++errors;
                } else if (phase.load(std::memory_order_relaxed) == 1) {
                    ++n;
                }
            }
            counts[static_cast<std::size_t>(t)] = n;
            m.f->C_CloseSession(s);
        });
    }
    while (ready.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
    std::cout << "measuring" << std::endl;
    const double cpu0 = cpu_self();
    const auto t0 = Clock::now();
    phase.store(1);
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    phase.store(2);
    const auto t1 = Clock::now();
    const double cpu1 = cpu_self();
    for (auto& th : pool) {
        th.join();
    }
    long total = 0;
    for (const long c : counts) {
        total += c;
    }
    const double elapsed = std::chrono::duration<double>(t1 - t0).count();
    std::cout << "R ops=" << total << " seconds=" << fixed(elapsed, 4) << " errors=" << errors
              << " first_error=" << first_error.load() << " cpu=" << fixed(cpu1 - cpu0, 3)
              << std::endl;
    return 0;
}

std::vector<int> parse_list(const std::string& text) {
    std::vector<int> out;
    std::size_t at = 0;
    while (at < text.size()) {
        const auto comma = text.find(',', at);
        out.push_back(std::stoi(text.substr(at, comma - at)));
        if (comma == std::string::npos) {
            break;
        }
        at = comma + 1;
    }
    return out;
}

struct Row {
    int n = 0, threads = 0;
    double ops_s = 0, ideal = 0, pct = 0, pct_n1 = 0;
    std::uint64_t min_module = 0, max_module = 0;
    double client_cpu = 0, service_cpu = 0; // cores used during the window
    double module_ms = 0; // window / mean ops per module: a busy module's time per op
    long errors = 0;
};

std::vector<std::uint64_t> module_ops(const Hsmsim& sim) {
    pr::hsm::SimAdmin admin(
        pr::hsm::Endpoint{sim.admin_socket(), std::chrono::seconds(10), "bench"});
    std::vector<std::uint64_t> out;
    for (const auto& m : admin.modules()) {
        out.push_back(m.ops);
    }
    return out;
}

int parent(Options& o) {
    const auto ns = parse_list(o.get("modules", "1,2,4,8,16,32"));
    const int latency = static_cast<int>(o.num("latency-ms", 2));
    const std::string seconds = o.get("seconds", "3");
    const std::string warmup = o.get("warmup", "0.5");
    const int per_module = static_cast<int>(o.num("threads-per-module", 2));
    o.done();
    const std::string self = self_exe();
    const double per_module_ideal = 1000.0 / latency;
    const double load_before = loadavg1();

    std::vector<Row> rows;
    double n1_rate = 0;
    std::printf("%4s %7s %10s %10s %7s %9s %11s %11s %9s %10s %10s\n", "N", "threads", "ops/s",
                "ideal", "%ideal", "%N*n1", "min/module", "max/module", "ms/op/mod", "client cpu",
                "hsmsim cpu");
    for (const int n : ns) {
        TempDir dir;
        Hsmsim sim(HSMSIM_PATH, dir.path(), n, latency);
        const std::string log = (dir.path() / "worker.log").string();
        Row row;
        row.n = n;
        row.threads = per_module * n + 2;
        Child c({self, "worker", "--threads", std::to_string(row.threads), "--seconds", seconds,
                 "--warmup", warmup},
                sim.env({"CKNFAST_LOADSHARING=1"}), log);
        std::string line;
        if (!c.read_line(line, std::chrono::seconds(60)) || line != "measuring") {
            auto [status, out] = c.finish();
            std::ifstream in(log);
            throw Broken("worker at N=" + std::to_string(n) + " did not start (" +
                         std::to_string(status) + "): " + line + out +
                         std::string((std::istreambuf_iterator<char>(in)), {}));
        }
        const auto ops0 = module_ops(sim);
        const double scpu0 = process_cpu_seconds(sim.pid());
        const double ccpu0 = process_cpu_seconds(c.pid());
        const auto t0 = Clock::now();
        c.read_line(line, std::chrono::seconds(600)); // the result line: window closed
        const double scpu1 = process_cpu_seconds(sim.pid());
        const double ccpu1 = process_cpu_seconds(c.pid());
        const auto t1 = Clock::now();
        const auto ops1 = module_ops(sim);
        auto [status, rest] = c.finish();
        if (status != 0 || line.rfind("R ", 0) != 0) {
            std::ifstream in(log);
            throw Broken("worker at N=" + std::to_string(n) + " exited " + std::to_string(status) +
                         ": " + line + rest +
                         std::string((std::istreambuf_iterator<char>(in)), {}));
        }
        const auto r = parse_pairs(line.substr(2));
        const double window = std::chrono::duration<double>(t1 - t0).count();
        row.ops_s = number(r, "ops") / number(r, "seconds");
        row.errors = static_cast<long>(number(r, "errors"));
        row.ideal = per_module_ideal * n;
        row.pct = 100.0 * row.ops_s / row.ideal;
        if (n == 1) {
            n1_rate = row.ops_s;
        }
        row.pct_n1 = n1_rate > 0 ? 100.0 * row.ops_s / (n1_rate * n) : 0.0;
        row.min_module = UINT64_MAX;
        std::uint64_t all = 0;
        for (std::size_t i = 0; i < ops1.size() && i < ops0.size(); ++i) {
            const std::uint64_t d = ops1[i] - ops0[i];
            row.min_module = std::min(row.min_module, d);
            row.max_module = std::max(row.max_module, d);
            all += d;
        }
        row.module_ms =
            all > 0 ? 1000.0 * window * static_cast<double>(ops1.size()) / static_cast<double>(all)
                    : 0.0;
        row.client_cpu = (ccpu1 - ccpu0) / window;
        row.service_cpu = (scpu1 - scpu0) / window;
        std::printf("%4d %7d %10.0f %10.0f %6.1f%% %8.1f%% %11llu %11llu %9.3f %10.2f %10.2f\n", n,
                    row.threads, row.ops_s, row.ideal, row.pct, row.pct_n1,
                    static_cast<unsigned long long>(row.min_module),
                    static_cast<unsigned long long>(row.max_module), row.module_ms, row.client_cpu,
                    row.service_cpu);
        std::fflush(stdout);
        if (row.errors > 0) {
            throw Broken("signing errors at N=" + std::to_string(n) + ": " + line);
        }
        if (row.min_module == 0) {
            throw Broken("a module served nothing at N=" + std::to_string(n));
        }
        sim.stop();
        rows.push_back(row);
    }
    double min_pct = 1e9;
    std::string fields;
    for (const auto& row : rows) {
        min_pct = std::min(min_pct, row.pct);
        const std::string k = "n" + std::to_string(row.n);
        fields += " " + k + "_ops=" + fixed(row.ops_s, 0) + " " + k + "_pct=" + fixed(row.pct, 1) +
                  " " + k + "_client_cpu=" + fixed(row.client_cpu, 2) + " " + k +
                  "_hsmsim_cpu=" + fixed(row.service_cpu, 2) + " " + k +
                  "_module_ms=" + fixed(row.module_ms, 3) + " " + k +
                  "_pct_of_n1=" + fixed(row.pct_n1, 1);
    }
    const bool met = min_pct >= kTargetPct;
    std::printf("%%N*n1: against N x the rate measured at N=1 in this run (the load-sharing "
                "itself); ms/op/mod: the window over the mean ops per module, i.e. what a "
                "busy module really takes per operation (%d ms simulated + hsmsim's own "
                "overhead: sleep overshoot, signing, wire)\n",
                latency);
    std::printf("cpu: cores busy during the window (client = the worker process, all threads); "
                "load average %.2f before, %.2f after; %ld cores\n",
                load_before, loadavg1(), ::sysconf(_SC_NPROCESSORS_ONLN));
    std::printf("target: >= %.0f%% of N x %.0f ops/s at every N: %s (lowest %.1f%%)\n", kTargetPct,
                per_module_ideal, met ? "met" : "NOT met", min_pct);
    std::printf("RESULT latency_ms=%d%s min_pct=%.1f target_pct=%.0f met=%s\n", latency,
                fields.c_str(), min_pct, kTargetPct, met ? "yes" : "no");
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    return worker_parent_main("bench_pkcs11_loadsharing", argc, argv, worker, parent);
}
