#!/usr/bin/python3
"""bench_fleet_reload: every module of a fleet cleared at once, one softcard
with many keys: how long until preloadrun has republished the tokens file with
the softcard on every module, and until the application's PKCS#11 module has
every key back on every module, next to the load itself; and how that grows
with keys x modules.

Starts `hsmsim serve --modules M --init-delay-ms 0` (default M=32, the most a
tokens file and the PKCS#11 module track) in a private /tmp directory and
creates the softcard card1. hsmsim has no option for a per-token load cost:
what a token load costs is its passphrase check (PBKDF2-HMAC-SHA256, 100,000
iterations, fixed) plus --op-latency-ms per operation (0 here). Its CLI makes
one key per call (`hsmsim key generate`, no bulk form), too slow for 10,000
keys: `ha_probe keygen` makes them over the client protocol instead (as
C_GenerateKeyPair does), in --keygen-jobs parallel connections. For each key
count K (default 100 and 1,000; --keys 100,1000,10000), keys added to card1:
  - `preloadrun -s card1 --passphrase-file P -f F -- sleep ...` (HA mode);
  - `ha_probe watch` stamps (CLOCK_MONOTONIC) hsmsim's module events and each
    publication of F;
  - the application, `ha_app fleet`: libpreloadrun-pkcs11.so with
    CKNFAST_RELOAD_KEYS=1, CKNFAST_LOADSHARING=1, NFAST_NFKM_TOKENSFILE=F,
    logged in to card1, finds its K keys (C_FindObjects) and first uses every
    key on every module (warm-up: each key signed M times in a row, so that
    the round robin gives it each module; checked in hsmsim's module listing);
  - the baseline, in the same run, before the clears: `ha_probe load` on all M
    modules at once (one thread and connection per module, as preloadrun's
    loader does after a clear of them all): connect and load card1 (the load
    cost: "load"), then each thread loads the K keys onto its module, one
    request each (the key loads themselves: "keyload"); median of
    --baseline-reps (default 3, 1 from 32,000 key-modules on);
  - then, once per workload of the application (--workloads, default one and
    sweep; a warm-up again before the second), every module cleared at once
    (`ha_probe clear`: hsmsim has no fleet-wide clear, so one admin
    connection and thread per module, released together; a clear drops the
    module's objects, so the last one answers some ms to some 100 ms later,
    growing with K: "cleared"), and from the release of the clears:
      publish = the publication of F in which card1 is loaded on every module
                at a new generation;
      ready   = the application has every key back on every module: the first
                reading of hsmsim's module listing (ha_app reads it after a
                signature, at most every ms) in which every module is usable
                at a new generation and holds at least K+1 objects (the K keys
                of the application and preloadrun's token: nothing else is
                loaded then), and then a signature succeeds (ready is when that
                one returned). The application signs in a loop meanwhile, one
                signature at a time:
                  one:   with one key only. The PKCS#11 module checks the
                         tokens file at each C_SignInit and reloads "the keys
                         the application uses at once, the others when first
                         needed" (libpreloadrun-pkcs11(7)): this is that
                         promise, the figure the target is judged on;
                  sweep: every key M times in a row, key after key, as an
                         application using all its keys everywhere: keys not
                         reloaded come back when used (the time includes those
                         K x M signatures).
                No such reading within --ready-timeout-s (default 10 s plus
                1.5 ms per key and module): "none".
overhead = ready - load - signing, where load is the baseline's token load (the
target: <= 1000 ms beyond the load cost) and signing is, for "sweep", what its
successful signatures until ready cost at the rate of a sweep with every key
in place (timed by ha_app at the end of its warm-up; 0 for "one"); cost per key
and module = overhead / (K x M), in microseconds, for each K; linear when it
does not grow from the smallest K to the largest by more than half (growth =
the ratio of the two; fixed costs make it fall). The application's
signatures that failed meanwhile (CKR_DEVICE_ERROR while no module holds the
softcard) are counted ("failed").

Prints a table and one line:
  RESULT m=32 k100_publish_ms=.. k100_ready_ms=.. k100_load_ms=.. k100_keyload_ms=..
         k100_overhead_ms=.. k100_per_keymod_us=.. k100_sweep_ready_ms=..
         k100_sweep_overhead_ms=.. k100_sweep_per_keymod_us=.. k1000_...
         target_ms=1000 met=yes|no linear=yes|no|n/a growth=..
         sweep_met=yes|no sweep_linear=yes|no|n/a sweep_growth=..
  (met= judges the key counts of at most 1,000, the target's size (the
  smallest count when all are larger); ready "none": not within the
  timeout; met= and linear= judge the first
  workload of --workloads, "one" by default)
Exit status: 0 when it measured (whatever the figures), 1 when something
broke, 2 bad usage.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_ha_reload import Broke, Lines, World, end, find_default  # noqa: E402

TARGET_MS = 1000.0
TARGET_KEYS = 1000  # the target's size: larger counts show how the time grows
LINEAR_GROWTH = 1.5
CARD = "card1"


def make_keys(world, args, passfile, card_hash, have, want):
    """Adds keys have..want-1 to card1 with parallel `ha_probe keygen`s."""
    jobs = []
    step = -(-(want - have) // args.keygen_jobs)
    for first in range(have, want, step):
        count = min(step, want - first)
        jobs.append(subprocess.Popen(
            [args.probe, "keygen", "--socket", world.socket, "--passphrase-file", passfile,
             "--count", str(count), "--first", str(first), card_hash],
            env=world.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    try:
        for job in jobs:
            out, err = job.communicate(timeout=3600)
            if job.returncode != 0 or not out.startswith("KEYGEN "):
                raise Broke(f"ha_probe keygen: exit {job.returncode}: {err}")
    finally:
        for job in jobs:
            end(job)


def keys_file(world, path, card_hash, want):
    idents = [k["ident"] for k in json.loads(world.cli("key", "list", "--json", timeout=300))
              if k.get("token_hash") == card_hash]
    if len(idents) != want:
        raise Broke(f"{len(idents)} keys protected by {CARD}, expected {want}")
    with open(path, "w") as f:
        f.write("\n".join(idents) + "\n")


def generations(world):
    return {m["number"]: m["generation"]
            for m in json.loads(world.cli("module", "list", "--json"))}


class Scenario:
    """preloadrun, ha_probe watch and ha_app fleet for K keys: start(), then close()."""

    def __init__(self, world, args, k):
        self.world, self.args, self.k = world, args, k
        self.d = os.path.join(world.root, f"k{k}")
        os.mkdir(self.d, 0o700)
        self.tokens_file = os.path.join(self.d, "tokens.json")
        self.pre = self.probe = self.app = None
        self.pre_err = os.path.join(self.d, "preloadrun.stderr")
        self.app_log = os.path.join(self.d, "app.log")
        self.app_err = os.path.join(self.d, "app.stderr")

    def start(self, passfile):
        world, args, k = self.world, self.args, self.k
        with open(self.pre_err, "wb") as err:
            self.pre = subprocess.Popen(
                [args.preloadrun, "-s", CARD, "--passphrase-file", passfile, "-f",
                 self.tokens_file, "--socket", world.socket, "--", "sleep", "100000"],
                env=world.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while not os.path.exists(self.tokens_file):
            if self.pre.poll() is not None:
                raise Broke(f"preloadrun exited {self.pre.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                raise Broke("preloadrun published no tokens file within 60 s")
            time.sleep(0.01)
        self.probe = subprocess.Popen([args.probe, "watch", "--socket", world.socket,
                                       "--tokens-file", self.tokens_file],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.events = Lines(self.probe)
        if not self.events.get(10).startswith("READY "):
            raise Broke("ha_probe watch: no READY line")
        env = dict(world.env, CKNFAST_RELOAD_KEYS="1", CKNFAST_LOADSHARING="1",
                   NFAST_NFKM_TOKENSFILE=self.tokens_file, PRELOADRUN_PKCS11_LOG=self.app_log)
        with open(self.app_err, "wb") as err:
            self.app = subprocess.Popen([args.app, "fleet", "--pkcs11", args.pkcs11, "--socket",
                                         world.socket, "--token", CARD, "--keys", str(k)],
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=err)
        self.answers = Lines(self.app)

    def log(self):
        return open(self.pre_err, errors="replace").read()

    def tell(self, command, timeout):
        """One command to ha_app; its answer line, split."""
        self.app.stdin.write((command + "\n").encode())
        self.app.stdin.flush()
        try:
            return self.answers.get(timeout).split()
        except Broke as e:
            raise Broke(f"ha_app {command}: {e}: {open(self.app_err).read()}")

    def close(self):
        for proc in (self.app, self.probe):
            if proc is not None and proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            end(proc, 1)
        end(self.pre, 20)


def baseline(world, args, passfile, card_hash, k, keys_path):
    """ha_probe load on all the modules: (token load ms, token + keys load ms), medians."""
    reps = args.baseline_reps or (3 if k * args.modules < 32000 else 1)
    r = subprocess.run([args.probe, "load", "--socket", world.socket, "--modules",
                        f"1-{args.modules}", "--passphrase-file", passfile, "--reps",
                        str(reps), "--keys-file", keys_path, card_hash],
                       env=world.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=3600)
    loads = [line.split() for line in r.stdout.splitlines() if line.startswith("LOAD ")]
    if r.returncode != 0 or len(loads) != reps:
        raise Broke(f"ha_probe load: exit {r.returncode}: {r.stderr}")
    return (statistics.median(int(x[1]) / 1e6 for x in loads),
            statistics.median(int(x[2]) / 1e6 for x in loads))


def published_everywhere(doc, old, modules):
    for t in doc["tokens"]:
        if t["name"] == CARD:
            fresh = {e["module"] for e in t["loaded"]
                     if e["module_generation"] > old.get(e["module"], -1)}
            return fresh >= set(range(1, modules + 1))
    return False


def clear_all(s, workload, timeout_s):
    """Clears every module while ha_app runs `workload`; the figures, in ms from the clear."""
    old = generations(s.world)
    armed = s.tell(f"run {workload} {int(timeout_s * 1000)}", 60)
    if armed[0] != "ARMED":
        raise Broke(f"ha_app: unexpected {' '.join(armed)}")
    r = subprocess.run([s.args.probe, "clear", "--admin-socket",
                        s.world.env["HSMSIM_ADMIN_SOCKET"], "--modules", f"1-{s.args.modules}"],
                       env=s.world.env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0 or not r.stdout.startswith("CLEAR "):
        raise Broke(f"ha_probe clear: exit {r.returncode}: {r.stderr}")
    t0, t_cleared = (int(x) for x in r.stdout.split()[1:3])
    usable = {}
    while True:
        kind, stamp, rest = (s.events.get(60).split(" ", 2) + [""])[:3]
        if kind == "EVENT":
            number, state, generation = rest.split()[:3]
            if state == "usable" and int(generation) > old.get(int(number), -1):
                usable[int(number)] = int(stamp)
        elif kind == "PUBLISH" and published_everywhere(json.loads(rest), old, s.args.modules):
            t_publish = int(stamp)
            break
    answer = s.answers.get(timeout_s + 120).split()
    if answer[0] not in ("READY", "TIMEOUT"):
        raise Broke(f"ha_app: unexpected {' '.join(answer)}")
    fig = {"cleared": (t_cleared - t0) / 1e6, "publish": (t_publish - t0) / 1e6,
           "usable": (max(usable.values()) - t0) / 1e6 if usable else float("nan"),
           "ready": (int(answer[2]) - t0) / 1e6 if answer[0] == "READY" else None,
           "signatures": int(answer[-2]), "failed": int(answer[-1])}
    if answer[0] == "TIMEOUT":
        fig["modules_ready"], fig["fewest"] = int(answer[2]), int(answer[3])
    return fig


def reloaded_keys(path, start):
    """What the PKCS#11 module's log says it reloaded at once, from offset start."""
    with open(path, errors="replace") as f:
        f.seek(start)
        text = f.read()
    found = [int(m.group(1)) for m in re.finditer(r"reloaded (\d+) key\(s\) onto module", text)]
    return sum(found), len(found)


def measure(world, args, passfile, card_hash, k, keys_path):
    s = Scenario(world, args, k)
    out = {"k": k}
    try:
        s.start(passfile)
        warm_timeout = 120 + k * args.modules * 0.02
        for i, workload in enumerate(args.workloads):
            warm = s.tell("warm", warm_timeout)
            if warm[0] != "WARM":
                raise Broke(f"ha_app warm: unexpected {' '.join(warm)}")
            if i == 0:
                out["load"], out["keyload"] = baseline(world, args, passfile, card_hash, k,
                                                       keys_path)
            log_start = os.path.getsize(s.app_log) if os.path.exists(s.app_log) else 0
            timeout_s = args.ready_timeout_s or 10 + k * args.modules * 0.0015
            fig = clear_all(s, workload, timeout_s)
            fig["reloaded"], fig["reload_lines"] = reloaded_keys(s.app_log, log_start)
            fig["timeout_s"] = timeout_s
            fig["warm_ms"], fig["warm_signatures"] = int(warm[1]) / 1e6, int(warm[2])
            # What the sweep's own signatures until ready cost, at the rate of a
            # sweep with every key in place (the one ha_app timed after warming up).
            fig["signing"] = 0.0
            if workload == "sweep":
                per_signature = int(warm[3]) / 1e6 / (k * args.modules)
                fig["signing"] = (fig["signatures"] - fig["failed"]) * per_signature
            fig["overhead"] = (None if fig["ready"] is None
                               else fig["ready"] - out["load"] - fig["signing"])
            out[workload] = fig
    finally:
        s.close()
    logged = [int(m.group(1)) for m in re.finditer(r"module \d+: 1 token\(s\) loaded in (\d+) ms",
                                                   s.log())]
    # preloadrun's own ms figures for the loads after the clears (the last M per clear).
    out["logged_max"] = max(logged[args.modules:]) if len(logged) > args.modules else float("nan")
    return out


def fmt(v, decimals=1):
    return "none" if v is None else f"{v:.{decimals}f}"


def per_keymod(r, f, modules):
    """The overhead per key and module, in microseconds (None when not ready)."""
    return None if f["overhead"] is None else f["overhead"] * 1000 / (r["k"] * modules)


def report(args, results):
    m = args.modules
    print(f"Fleet reload: hsmsim {m} modules, init delay 0 ms, one softcard ({CARD}) with K "
          "ec-p256 keys, every module cleared at once; times in ms from the first clear")
    for workload in args.workloads:
        print(f"  workload '{workload}':")
        head = (f"{'keys':>6} {'cleared':>8} {'usable':>8} {'publish':>8} {'ready':>9} "
                f"{'load':>7} {'keyload':>8} {'signing':>8} {'overhead':>9} {'us/key-mod':>10} "
                f"{'-keyload':>9} {'reloaded':>9} {'signs':>7} {'failed':>6}")
        print(head)
        print("-" * len(head))
        for r in results:
            f = r[workload]
            beyond_keys = None if f["ready"] is None else f["ready"] - r["keyload"] - f["signing"]
            print(f"{r['k']:>6} {f['cleared']:>8.1f} {f['usable']:>8.1f} {f['publish']:>8.1f} "
                  f"{fmt(f['ready']):>9} {r['load']:>7.1f} {r['keyload']:>8.1f} "
                  f"{f['signing']:>8.1f} {fmt(f['overhead']):>9} "
                  f"{fmt(per_keymod(r, f, m), 2):>10} {fmt(beyond_keys):>9} {f['reloaded']:>9} "
                  f"{f['signatures']:>7} {f['failed']:>6}")
            if f["ready"] is None:
                print(f"{'':>6} not ready within {f['timeout_s']:.0f} s: {f['modules_ready']} "
                      f"of {m} modules held every key; fewest objects on a module "
                      f"{f['fewest']} (K+1 = {r['k'] + 1})")
    print("  cleared: the last clear answered; usable: the last 'usable' event; publish: the "
          "tokens file with card1 on every module at its new generation; ready: every key "
          "back on every module (hsmsim's listing), a signature after; load: ha_probe load of "
          "card1 on all modules at once; keyload: that and the K keys on each; signing: what "
          "the workload's successful signatures cost at the rate of a sweep with every key in "
          "place; overhead = ready - load - signing; -keyload: ready - keyload - signing (beyond the "
          "key loads themselves); reloaded: keys the PKCS#11 module "
          "reloaded on its own (its log); signs, failed: the application's signatures from "
          "the clear to ready, and those that failed")
    for r in results:
        w = r[args.workloads[-1]]
        print(f"  K={r['k']}: warm-up before '{args.workloads[-1]}' {w['warm_ms']:.0f} ms "
              f"({w['warm_signatures']} signatures); preloadrun's own slowest token load after "
              f"a clear {r['logged_max']} ms")


def verdict(args, results, workload):
    """(met, linear, growth) of one workload."""
    m = args.modules
    judged = [r for r in results if r["k"] <= TARGET_KEYS] or results[:1]
    met = all(r[workload]["overhead"] is not None and r[workload]["overhead"] <= TARGET_MS
              for r in judged)
    per = [per_keymod(r, r[workload], m) for r in results]
    if len(per) < 2 or any(p is None for p in per) or per[0] <= 0:
        return met, "n/a", float("nan")
    growth = per[-1] / per[0]
    return met, "yes" if growth <= LINEAR_GROWTH else "no", growth


def result_line(args, results):
    primary = args.workloads[0]
    met, linear, growth = verdict(args, results, primary)
    print(f"target: every key back on every module <= {TARGET_MS:g} ms beyond the load "
          f"(workload '{primary}'): {'met' if met else 'NOT met'}; linear in keys x modules "
          f"(cost per key-module growth {growth:.2f} <= {LINEAR_GROWTH}): {linear}")
    fields = [f"m={args.modules}"]
    for r in results:
        p = f"k{r['k']}_"
        f = r[primary]
        fields += [f"{p}publish_ms={f['publish']:.1f}", f"{p}ready_ms={fmt(f['ready'])}",
                   f"{p}load_ms={r['load']:.1f}", f"{p}keyload_ms={r['keyload']:.1f}",
                   f"{p}overhead_ms={fmt(f['overhead'])}",
                   f"{p}per_keymod_us={fmt(per_keymod(r, f, args.modules), 2)}"]
        for w in args.workloads[1:]:
            f = r[w]
            fields += [f"{p}{w}_ready_ms={fmt(f['ready'])}",
                       f"{p}{w}_overhead_ms={fmt(f['overhead'])}",
                       f"{p}{w}_per_keymod_us={fmt(per_keymod(r, f, args.modules), 2)}"]
    tail = ""
    for w in args.workloads[1:]:
        w_met, w_linear, w_growth = verdict(args, results, w)
        print(f"        workload '{w}': {'met' if w_met else 'NOT met'}; linear: {w_linear} "
              f"(growth {w_growth:.2f})")
        tail += (f" {w}_met={'yes' if w_met else 'no'} {w}_linear={w_linear} "
                 f"{w}_growth={w_growth:.2f}")
    print("RESULT " + " ".join(fields) + f" target_ms={TARGET_MS:g} met={'yes' if met else 'no'} "
          f"linear={linear} growth={growth:.2f}" + tail)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hsmsim", default=find_default("hsmsim", "HSMSIM"))
    ap.add_argument("--preloadrun", default=find_default("preloadrun", "PRELOADRUN"))
    ap.add_argument("--probe", default=find_default("ha_probe", "HA_PROBE"))
    ap.add_argument("--app", default=find_default("ha_app", "HA_APP"))
    ap.add_argument("--pkcs11", default=os.environ.get("PRELOADRUN_PKCS11_MODULE"),
                    help="libpreloadrun-pkcs11.so")
    ap.add_argument("--modules", type=int, default=32, help="modules (1-32; default 32)")
    ap.add_argument("--keys", default="100,1000",
                    help="key counts, comma-separated (1-20000; default 100,1000)")
    ap.add_argument("--workloads", default="one,sweep",
                    help="the application's workloads during the clear: one, sweep or both "
                    "(the first decides met=)")
    ap.add_argument("--ready-timeout-s", type=float, default=0,
                    help="give up on ready after this long (default: 10 s + 1.5 ms per key-module)")
    ap.add_argument("--baseline-reps", type=int, default=0,
                    help="baseline repetitions (default 3; 1 from 32,000 key-modules on)")
    ap.add_argument("--keygen-jobs", type=int, default=4)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    for name in ("hsmsim", "preloadrun", "probe", "app"):
        if not getattr(args, name) or not os.access(getattr(args, name), os.X_OK):
            ap.error(f"--{name}: not an executable: {getattr(args, name)}")
    if not (args.pkcs11 and os.path.isfile(args.pkcs11)):
        ap.error(f"--pkcs11: not a file: {args.pkcs11}")
    try:
        counts = sorted({int(x) for x in args.keys.split(",")})
    except ValueError:
        ap.error("--keys: numbers, comma-separated")
    args.workloads = args.workloads.split(",")
    if (not counts or min(counts) < 1 or max(counts) > 20000 or not 1 <= args.modules <= 32 or
            args.baseline_reps < 0 or args.keygen_jobs < 1 or
            not args.workloads or any(w not in ("one", "sweep") for w in args.workloads)):
        ap.error("--keys between 1 and 20000, --modules between 1 and 32, --workloads one,sweep, "
                 "--baseline-reps >= 0, --keygen-jobs >= 1")

    root = tempfile.mkdtemp(prefix="fb", dir="/tmp")
    world = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # runs the finally clauses
    try:
        world = World(args.hsmsim, root, args.modules, 0,
                      ["--max-keys-per-uid", max(10000, 2 * max(counts)),
                       "--max-objects-per-uid", 100000])
        passfile = os.path.join(root, "pass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"bench passphrase")
        os.close(fd)
        world.cli("softcard", "create", CARD, "--passphrase-file", passfile)
        card_hash = {c["name"]: c["hash"] for c in json.loads(
            world.cli("softcard", "list", "--json"))}[CARD]
        results = []
        have = 0
        for k in counts:
            make_keys(world, args, passfile, card_hash, have, k)
            have = k
            keys_path = os.path.join(root, f"keys{k}")
            keys_file(world, keys_path, card_hash, k)
            results.append(measure(world, args, passfile, card_hash, k, keys_path))
    except (Broke, subprocess.TimeoutExpired, OSError, ValueError, KeyError) as e:
        print(f"bench_fleet_reload: {e}", file=sys.stderr)
        return 1
    finally:
        if world:
            world.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"bench_fleet_reload: work directory {root} kept", file=sys.stderr)

    report(args, results)
    result_line(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
