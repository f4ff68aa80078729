// soak_client: the two programs of the chaos soak (soak.py) that must be
// native: the application that signs, and the observer of the fleet.
// Every line either prints starts with a word and a CLOCK_MONOTONIC timestamp
// in nanoseconds (the clock of Python's time.monotonic_ns()), so that the
// driver puts everything on one time line.
//
//   soak_client sign --token LABEL --ec-pubkey PEM [--rsa-pubkey PEM]
//       [--threads 4] [--rsa-every 10] [--error-backoff-ms 10] [--stats-ms 1000]
//       [--module PATH] [--pin PIN]
//     The application: dlopens the PKCS#11 module (as any application does,
//     configured by its environment: NFAST_NFKM_TOKENSFILE, CKNFAST_*,
//     HSMSIM_SOCKET), logs in to the token LABEL, and runs T threads, each with
//     its own session, signing random messages in a loop (C_SignInit +
//     C_Sign) with the EC P-256 key of CKA_ID 01 (CKM_ECDSA_SHA256) and, with
//     --rsa-pubkey, every Nth signature with the RSA key of CKA_ID 02
//     (CKM_SHA256_RSA_PKCS). Every signature is verified in software with
//     OpenSSL against the public key given in PEM (taken from the world, not
//     from the module); the first of each key in each thread is also checked
//     with one bit flipped, which must not verify. Prints
//       READY <ns> pid=<pid> threads=<T>
//       ERR <ns> start=<ns> thread=<i> key=ec|rsa fn=C_SignInit|C_Sign rv=0x<CKR>
//       BAD <ns> start=<ns> thread=<i> key=ec|rsa len=<signature length>
//       STATS <ns> ok=<n> bad=<n> err=<n>            every --stats-ms
//       DONE <ns> ok=<n> bad=<n> err=<n>             after SIGTERM or SIGINT
//       FATAL <ns> <why>                              and it stops
//     where <ns> is when the call returned and start= when C_SignInit was
//     called. After an error a thread waits --error-backoff-ms before its next
//     signature, as an application would, so that an outage does not turn
//     into a flood of lines. Exit status: 0 after SIGTERM/SIGINT, 1 when the
//     setup failed (no slot, no key, C_Initialize failed) or a corrupted
//     signature verified (a FATAL line says which), 2 bad usage.
//
//   soak_client watch --socket S --tokens-file F [--poll-ms 50]
//     The observer: subscribes to the service's module events and watches F's
//     directory (inotify). When the service goes away it says so and
//     subscribes again as soon as it can. Prints
//       UP <ns>                       subscribed (again)
//       MODULES <ns> <json array>     the modules (number, esn, state,
//                                     generation, latency_ms, objects,
//                                     fail_next): at each subscription, and
//                                     whenever a poll every --poll-ms shows a
//                                     change (fail_next is not in events)
//       EVENT <ns> <module> <state> <generation> <previous state> <previous generation>
//       DOWN <ns> <why>               the service connection was lost
//       PUBLISH <ns> <the tokens file, one line of JSON>
//       REMOVED <ns>                  the tokens file was removed
//     until its standard input closes; each line it reads there has the
//     module list taken and printed at once, changed or not. Exit status: 0,
//     1 when something broke, 2 bad usage.

#include "bench_support.hpp"
#include "preloadrun/common/ossl.hpp"
#include "preloadrun/hsm/service.hpp"
#include "preloadrun/pkcs11/cryptoki.hpp"

#include <atomic>
#include <csignal>
#include <cstdint>
#include <ctime>
#include <dlfcn.h>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <random>
#include <sstream>
#include <sys/inotify.h>
#include <sys/prctl.h>

using namespace bench_support;
namespace pr = preloadrun;

namespace {

std::int64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::mutex out_mutex;

// One whole line on stdout, flushed: lines of different threads never mix.
void emit(const std::string& line) {
    std::lock_guard lock(out_mutex);
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
}

std::string hex_rv(CK_RV rv) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(rv));
    return buf;
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    if (!in) {
        throw Broken("cannot read " + path);
    }
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// ---- sign ----------------------------------------------------------------------------

// A public key, parsed once per thread (EVP_PKEY objects are not shared).
class PublicKey {
public:
    explicit PublicKey(const std::string& pem) {
        const pr::ossl::Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
        key_.reset(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
        if (!key_) {
            throw Broken("not a PEM public key");
        }
    }

    // SHA-256 of `msg` signed by this key: `sig` is r || s for EC (PKCS#11's
    // form), PKCS#1 v1.5 for RSA.
    bool verifies(const std::vector<unsigned char>& msg, const unsigned char* sig,
                  std::size_t len) const {
        std::vector<unsigned char> der;
        if (EVP_PKEY_get_base_id(key_.get()) == EVP_PKEY_EC) {
            if (len != 64) {
                return false;
            }
            const pr::ossl::EcdsaSig s(ECDSA_SIG_new());
            pr::ossl::Bignum r(BN_bin2bn(sig, 32, nullptr));
            pr::ossl::Bignum t(BN_bin2bn(sig + 32, 32, nullptr));
            if (!s || !r || !t || ECDSA_SIG_set0(s.get(), r.get(), t.get()) != 1) {
                return false;
            }
            static_cast<void>(r.release()); // s owns them now
            static_cast<void>(t.release());
            const int n = i2d_ECDSA_SIG(s.get(), nullptr);
            der.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
            unsigned char* p = der.data();
            i2d_ECDSA_SIG(s.get(), &p);
            sig = der.data();
            len = der.size();
        }
        const pr::ossl::MdCtx ctx(EVP_MD_CTX_new());
        return ctx &&
               EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) == 1 &&
               EVP_DigestVerify(ctx.get(), sig, len, msg.data(), msg.size()) == 1;
    }

private:
    pr::ossl::Pkey key_;
};

class Pkcs11 {
public:
    explicit Pkcs11(const std::string& path) {
        lib_ = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
        if (lib_ == nullptr) {
            throw Broken(std::string("dlopen: ") + ::dlerror());
        }
        auto get = reinterpret_cast<CK_C_GetFunctionList>(::dlsym(lib_, "C_GetFunctionList"));
        if (get == nullptr) {
            throw Broken("no C_GetFunctionList in " + path);
        }
        check(get(&f), "C_GetFunctionList");
        CK_C_INITIALIZE_ARGS args{};
        args.flags = CKF_OS_LOCKING_OK;
        check(f->C_Initialize(&args), "C_Initialize");
    }
    Pkcs11(const Pkcs11&) = delete;
    Pkcs11& operator=(const Pkcs11&) = delete;
    ~Pkcs11() { f->C_Finalize(nullptr); }

    static void check(CK_RV rv, const std::string& what) {
        if (rv != CKR_OK) {
            throw Broken(what + " failed: CKR " + hex_rv(rv));
        }
    }

    CK_SLOT_ID slot_of(const std::string& label) {
        CK_ULONG n = 0;
        check(f->C_GetSlotList(CK_TRUE, nullptr, &n), "C_GetSlotList");
        std::vector<CK_SLOT_ID> slots(n);
        check(f->C_GetSlotList(CK_TRUE, slots.data(), &n), "C_GetSlotList");
        for (CK_ULONG i = 0; i < n; ++i) {
            CK_TOKEN_INFO info{};
            check(f->C_GetTokenInfo(slots[i], &info), "C_GetTokenInfo");
            std::string l(reinterpret_cast<char*>(info.label), sizeof info.label);
            l.erase(l.find_last_not_of(' ') + 1);
            if (l == label) {
                return slots[i];
            }
        }
        throw Broken("no token labelled " + label);
    }

    CK_OBJECT_HANDLE find_private(CK_SESSION_HANDLE s, unsigned char id) {
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_ID, &id, 1}};
        check(f->C_FindObjectsInit(s, t, 2), "C_FindObjectsInit");
        CK_OBJECT_HANDLE h = 0;
        CK_ULONG n = 0;
        check(f->C_FindObjects(s, &h, 1, &n), "C_FindObjects");
        check(f->C_FindObjectsFinal(s), "C_FindObjectsFinal");
        if (n != 1) {
            throw Broken("no private key with CKA_ID " + std::to_string(id));
        }
        return h;
    }

    CK_FUNCTION_LIST_PTR f = nullptr;

private:
    void* lib_ = nullptr; // not dlclose'd: the module may leave threads behind
};

struct Counters {
    std::atomic<std::uint64_t> ok{0}, bad{0}, err{0};
    std::string line(const char* word) const {
        return std::string(word) + " " + std::to_string(now_ns()) +
               " ok=" + std::to_string(ok.load()) + " bad=" + std::to_string(bad.load()) +
               " err=" + std::to_string(err.load());
    }
};

int sign(Options& o) {
    const std::string module = o.get("module", PKCS11_MODULE_PATH);
    const std::string token = o.get("token", "");
    const std::string pin = o.get("pin", "any");
    const std::string ec_pem_path = o.get("ec-pubkey", "");
    const std::string rsa_pem_path = o.get("rsa-pubkey", "");
    const int threads = static_cast<int>(o.num("threads", 4));
    const int rsa_every = static_cast<int>(o.num("rsa-every", 10));
    const int backoff_ms = static_cast<int>(o.num("error-backoff-ms", 10));
    const int stats_ms = static_cast<int>(o.num("stats-ms", 1000));
    o.done();
    if (token.empty() || ec_pem_path.empty() || threads < 1 || threads > 256 || rsa_every < 1 ||
        backoff_ms < 0 || stats_ms < 10) {
        throw std::invalid_argument("sign needs --token and --ec-pubkey; --threads 1..256, "
                                    "--rsa-every >= 1, --error-backoff-ms >= 0, --stats-ms >= 10");
    }
    const std::string ec_pem = read_text(ec_pem_path);
    const std::string rsa_pem = rsa_pem_path.empty() ? std::string() : read_text(rsa_pem_path);
    PublicKey check_ec(ec_pem); // fail early on a bad file
    if (!rsa_pem.empty()) {
        PublicKey check_rsa(rsa_pem);
    }

    // SIGTERM and SIGINT end the run; they are taken by sigtimedwait below,
    // so every thread (the module's too) starts with them blocked.
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM); // never outlive the driver

    Pkcs11 p(module);
    const CK_SLOT_ID slot = p.slot_of(token);
    CK_SESSION_HANDLE login = 0;
    Pkcs11::check(
        p.f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &login),
        "C_OpenSession");
    std::string pin_copy = pin;
    const CK_RV lrv =
        p.f->C_Login(login, CKU_USER, reinterpret_cast<CK_UTF8CHAR_PTR>(pin_copy.data()),
                     static_cast<CK_ULONG>(pin_copy.size()));
    if (lrv != CKR_USER_ALREADY_LOGGED_IN) {
        Pkcs11::check(lrv, "C_Login");
    }

    Counters counts;
    std::atomic<bool> stop{false};
    std::atomic<int> ready{0};
    std::atomic<bool> failed{false};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            const PublicKey ec(ec_pem);
            std::unique_ptr<PublicKey> rsa;
            if (!rsa_pem.empty()) {
                rsa = std::make_unique<PublicKey>(rsa_pem);
            }
            CK_SESSION_HANDLE s = 0;
            CK_OBJECT_HANDLE ec_key = 0;
            CK_OBJECT_HANDLE rsa_key = 0;
            try {
                Pkcs11::check(p.f->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &s),
                              "C_OpenSession");
                ec_key = p.find_private(s, 1);
                if (rsa) {
                    rsa_key = p.find_private(s, 2);
                }
            } catch (const std::exception& e) {
                emit("FATAL " + std::to_string(now_ns()) + " thread " + std::to_string(t) + ": " +
                     e.what());
                failed = true;
                ++ready;
                return;
            }
            ++ready;
            std::mt19937_64 rng(static_cast<std::uint64_t>(now_ns()) ^
                                (static_cast<std::uint64_t>(t) << 48));
            std::vector<unsigned char> msg;
            unsigned char sig[1024];
            bool checked[2] = {false, false};
            for (std::uint64_t n = 0; !stop.load(std::memory_order_relaxed); ++n) {
                const bool use_rsa = rsa && (n % static_cast<std::uint64_t>(rsa_every)) ==
                                                static_cast<std::uint64_t>(rsa_every - 1);
                msg.resize(16 + rng() % 113);
                for (auto& b : msg) {
                    b = static_cast<unsigned char>(rng());
                }
                CK_MECHANISM mech{use_rsa ? CKM_SHA256_RSA_PKCS : CKM_ECDSA_SHA256, nullptr, 0};
                CK_ULONG len = sizeof sig;
                const char* fn = "C_SignInit";
                const std::int64_t start = now_ns();
                CK_RV rv = p.f->C_SignInit(s, &mech, use_rsa ? rsa_key : ec_key);
                if (rv == CKR_OK) {
                    fn = "C_Sign";
                    rv = p.f->C_Sign(s, msg.data(), static_cast<CK_ULONG>(msg.size()), sig, &len);
                }
                const std::int64_t end = now_ns();
                const char* kind = use_rsa ? "rsa" : "ec";
                if (rv != CKR_OK) {
                    ++counts.err;
                    emit("ERR " + std::to_string(end) + " start=" + std::to_string(start) +
                         " thread=" + std::to_string(t) + " key=" + kind + " fn=" + fn +
                         " rv=" + hex_rv(rv));
                    if (backoff_ms > 0) {
                        std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
                    }
                    continue;
                }
                const PublicKey& pub = use_rsa ? *rsa : ec;
                if (!checked[use_rsa ? 1 : 0] && len > 0) {
                    // The check itself is checked once per key and thread: a
                    // signature with one bit flipped must not verify.
                    checked[use_rsa ? 1 : 0] = true;
                    sig[len / 2] ^= 0x10;
                    const bool forged = pub.verifies(msg, sig, len);
                    sig[len / 2] ^= 0x10;
                    if (forged) {
                        emit("FATAL " + std::to_string(now_ns()) + " thread " + std::to_string(t) +
                             ": a corrupted " + kind +
                             " signature verified: the verification is broken");
                        failed = true;
                        break;
                    }
                }
                if (pub.verifies(msg, sig, len)) {
                    ++counts.ok;
                } else {
                    ++counts.bad;
                    emit("BAD " + std::to_string(end) + " start=" + std::to_string(start) +
                         " thread=" + std::to_string(t) + " key=" + kind +
                         " len=" + std::to_string(len));
                }
            }
            p.f->C_CloseSession(s);
        });
    }
    while (ready.load() < threads) {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!failed) {
        emit("READY " + std::to_string(now_ns()) + " pid=" + std::to_string(::getpid()) +
             " threads=" + std::to_string(threads));
    }
    const timespec period{stats_ms / 1000, static_cast<long>(stats_ms % 1000) * 1000000};
    while (!failed) {
        const int got = ::sigtimedwait(&stop_set, nullptr, &period);
        if (got == SIGTERM || got == SIGINT) {
            break;
        }
        emit(counts.line("STATS"));
    }
    stop = true;
    for (auto& th : pool) {
        th.join();
    }
    emit(counts.line("DONE"));
    p.f->C_CloseSession(login);
    return failed ? 1 : 0;
}

// ---- watch ---------------------------------------------------------------------------

nlohmann::json modules_json(const std::vector<pr::hsm::ModuleInfo>& modules) {
    auto out = nlohmann::json::array();
    for (const auto& m : modules) {
        out.push_back({{"number", m.number},
                       {"esn", m.esn},
                       {"state", std::string(pr::hsm::to_string(m.state))},
                       {"generation", m.generation},
                       {"latency_ms", m.latency_ms},
                       {"objects", m.objects},
                       {"fail_next", m.fail_next}});
    }
    return out;
}

class Watcher {
public:
    Watcher(std::string socket, const fs::path& file, int poll_ms)
        : poll_ms_(poll_ms), name_(file.filename().string()), file_(file) {
        endpoint_.socket_path = std::move(socket);
        endpoint_.client_name = "soak_watch";
        endpoint_.timeout = std::chrono::milliseconds(5000);
        ino_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (ino_ < 0 ||
            ::inotify_add_watch(ino_, file.parent_path().c_str(),
                                IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_MOVED_FROM) < 0) {
            throw Broken(std::string("inotify: ") + std::strerror(errno));
        }
    }

    int run() {
        auto next_poll = Clock::now();
        for (;;) {
            if (!stream_) {
                try_subscribe();
            }
            std::vector<pollfd> fds = {{ino_, POLLIN, 0}, {STDIN_FILENO, POLLIN, 0}};
            if (stream_) {
                fds.push_back({stream_->fd(), POLLIN, 0});
            }
            const auto wait =
                std::chrono::duration_cast<std::chrono::milliseconds>(next_poll - Clock::now())
                    .count();
            const int timeout = stream_ ? static_cast<int>(std::max<long>(0, wait)) : 20;
            if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) {
                std::perror("soak_client watch: poll");
                return 1;
            }
            if (fds[0].revents != 0) {
                read_inotify();
            }
            if (fds[1].revents != 0) {
                // A line asks for the module list now, printed even if
                // unchanged; the end of input ends the watch.
                char buf[256];
                if (::read(STDIN_FILENO, buf, sizeof buf) <= 0) {
                    return 0;
                }
                last_modules_ = nlohmann::json();
                next_poll = Clock::now();
            }
            if (stream_ && fds.size() > 2 && fds[2].revents != 0) {
                read_events();
            }
            if (stream_ && Clock::now() >= next_poll) {
                poll_modules();
                next_poll = Clock::now() + std::chrono::milliseconds(poll_ms_);
            }
        }
    }

private:
    void lost(const std::string& why) {
        emit("DOWN " + std::to_string(now_ns()) + " " + why);
        stream_.reset();
        client_.reset();
        last_modules_ = nlohmann::json();
    }

    void try_subscribe() {
        try {
            stream_ = pr::hsm::subscribe(endpoint_);
            client_ = pr::hsm::connect(endpoint_);
        } catch (const std::exception&) {
            stream_.reset();
            client_.reset();
            return; // not back yet: the caller waits a little and tries again
        }
        emit("UP " + std::to_string(now_ns()));
        print_modules(modules_json(stream_->snapshot()));
    }

    void print_modules(nlohmann::json modules) {
        if (modules != last_modules_) {
            emit("MODULES " + std::to_string(now_ns()) + " " + modules.dump());
            last_modules_ = std::move(modules);
        }
    }

    void poll_modules() {
        try {
            print_modules(modules_json(client_->modules()));
        } catch (const std::exception& e) {
            lost(std::string("modules: ") + e.what());
        }
    }

    void read_events() {
        try {
            while (auto event = stream_->next(std::chrono::milliseconds(0))) {
                emit("EVENT " + std::to_string(now_ns()) + " " +
                     std::to_string(event->module.number) + " " +
                     std::string(pr::hsm::to_string(event->module.state)) + " " +
                     std::to_string(event->module.generation) + " " +
                     std::string(pr::hsm::to_string(event->previous_state)) + " " +
                     std::to_string(event->previous_generation));
            }
        } catch (const std::exception& e) {
            lost(std::string("events: ") + e.what());
        }
    }

    void read_inotify() {
        alignas(inotify_event) char buffer[64 * 1024];
        bool published = false;
        bool removed = false;
        std::int64_t stamp = 0;
        for (;;) {
            const ssize_t n = ::read(ino_, buffer, sizeof buffer);
            if (n <= 0) {
                break;
            }
            if (stamp == 0) {
                stamp = now_ns();
            }
            for (char* p = buffer; p < buffer + n;) {
                inotify_event ev{};
                std::memcpy(&ev, p, sizeof ev);
                const char* evname = p + sizeof(inotify_event);
                if (ev.len > 0 && name_ == std::string(evname, ::strnlen(evname, ev.len))) {
                    if ((ev.mask & (IN_MOVED_TO | IN_CLOSE_WRITE)) != 0) {
                        published = true;
                        removed = false;
                    } else {
                        removed = true;
                    }
                }
                p += sizeof(inotify_event) + ev.len;
            }
        }
        if (removed) {
            emit("REMOVED " + std::to_string(stamp));
        } else if (published) {
            std::ifstream in(file_);
            std::stringstream text;
            text << in.rdbuf();
            try {
                emit("PUBLISH " + std::to_string(stamp) + " " +
                     nlohmann::json::parse(text.str()).dump());
            } catch (const std::exception&) {
                // gone again already, or not a tokens file: the next event tells
            }
        }
    }

    pr::hsm::Endpoint endpoint_;
    int poll_ms_;
    std::string name_;
    fs::path file_;
    int ino_ = -1;
    std::unique_ptr<pr::hsm::EventStream> stream_;
    std::unique_ptr<pr::hsm::Service> client_;
    nlohmann::json last_modules_;
};

int watch(Options& o) {
    const std::string socket = o.get("socket", "");
    const std::string file = o.get("tokens-file", "");
    const int poll_ms = static_cast<int>(o.num("poll-ms", 50));
    o.done();
    if (socket.empty() || file.empty() || poll_ms < 1) {
        throw std::invalid_argument("watch needs --socket and --tokens-file; --poll-ms >= 1");
    }
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);
    Watcher w(socket, fs::absolute(file), poll_ms);
    return w.run();
}

} // namespace

int main(int argc, char** argv) {
    const std::string mode = argc > 1 ? argv[1] : "";
    try {
        if (mode != "sign" && mode != "watch") {
            throw std::invalid_argument("usage: soak_client sign|watch --options (see the "
                                        "comment at the top of bench/soak/soak_client.cpp)");
        }
        Options o(argc, argv, 2);
        return mode == "sign" ? sign(o) : watch(o);
    } catch (const std::invalid_argument& e) {
        std::cerr << "soak_client: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "soak_client: " << e.what() << "\n";
        return 1;
    }
}
