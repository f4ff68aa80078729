#!/usr/bin/python3
"""bench_ha_reload: how long after a module becomes usable again does
preloadrun publish the tokens file with the module's new handles, and how much
of that is the load itself?

Starts `hsmsim serve` (2 modules, no simulated latency) in a private /tmp
directory, creates 10 softcards, and for 1 token and for 10 tokens:
  - runs `preloadrun -s ... -f FILE -- sleep ...` (HA mode);
  - runs `ha_probe watch`, which stamps (CLOCK_MONOTONIC) every module event of
    hsmsim and every publication of FILE (inotify on the rename);
  - clears module 2 N times, one after the other; for each clear
      reload latency = publication carrying every token on module 2 at its new
                       generation  -  hsmsim's event "module 2 usable" at that
                       generation;
  - reads preloadrun's own "module 2: K token(s) loaded in T ms" lines (the
    load as preloadrun timed it, ms resolution);
  - the baseline, in the same run and interleaved with the clears (one right
    after each reload, so both see the same machine load): `ha_probe load`
    does what preloadrun's loader does for one module (connect, load the K
    tokens), timed in ns.
overhead = reload latency - load time, per clear (the median of those
differences; also against preloadrun's own ms figure per clear). Target (recovery in
milliseconds, event-driven): median overhead < 5 ms.

With --first-signature (default 100 clears), an application signs all along:
`ha_app first` loads libpreloadrun-pkcs11.so with CKNFAST_RELOAD_KEYS=1 and
CKNFAST_LOADSHARING=1 (and the tokens file), logs in to the first softcard and
signs in a loop, one signature at a time, with a key it protects (CKM_ECDSA).
The PKCS#11 module has no slot per HSM (it picks the module in turn), so ha_app
reads hsmsim's module listing after every signature (so also before the next
one): when module 2's operation counter grew between the readings around a
signature and its generation stayed the same, that signature was served by
module 2 at that generation (hsmsim counts an operation before it answers;
nothing else does cryptography there: the loads of preloadrun and ha_probe are
management operations). For each clear
  first signature = the C_Sign that module 2 served first at its new
                    generation returned  -  hsmsim's event "module 2 usable";
  its overhead    = first signature - load time (the same clear's ha_probe
                    load, run after the first signature), median and p99;
                    also against preloadrun's own logged load of the same
                    clear (ms resolution), median and p99;
  after publish   = first signature - the publication (the application's own
                    share: the PKCS#11 module's reaction), median and p99.
The first signature includes the load and publication by preloadrun, the
PKCS#11 module's check of the file at its next C_SignInit, the reload of the
key onto module 2, and the turn of module 2 in the round robin; reading the
listing after each signature stretches each turn of the loop by one request
(a whole turn, signature and reading, took about 0.09 ms on a 2-core test
machine). Target (recovery): the overhead <= 10 ms, median and p99, beyond
the load of that very clear: first_met= judges ovh/logged (preloadrun's own
timing of the clear's load, truncated to the ms, so never in the figure's
favour), or the paired overhead when no log line was found. The paired
overhead against ha_probe's separate load is shown too: that load is another
one (another connection, other key derivations), so its own spread widens
the paired p99. The reload figures of that run are
taken while the application signs (the machine is busier).

Prints a table and one line:
  RESULT tokens1_reload_median_ms=.. tokens1_reload_p99_ms=.. tokens1_load_median_ms=..
         tokens1_overhead_median_ms=.. tokens10_... target_overhead_ms=5 met=yes|no
  (with --first-signature also tokensN_first_sig_median_ms=.. tokensN_first_sig_p99_ms=..
   tokensN_first_overhead_median_ms=.. tokensN_first_overhead_p99_ms=..
   tokensN_first_overhead_vs_logged_median_ms=.. tokensN_first_overhead_vs_logged_p99_ms=..
   tokensN_first_after_publish_median_ms=.. tokensN_first_after_publish_p99_ms=..
   target_first_overhead_ms=10 first_met=yes|no)
Exit status: 0 when it measured (whatever the figures), 1 when something
broke, 2 bad usage.
"""

import argparse
import json
import os
import queue
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

READY_RE = re.compile(r"^hsmsim: ready: ")
TARGET_OVERHEAD_MS = 5.0
TARGET_FIRST_OVERHEAD_MS = 10.0
MODULE = 2


class Broke(Exception):
    pass


def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def find_default(name, env):
    if os.environ.get(env):
        return os.environ[env]
    return shutil.which(name)


class Lines:
    """Reads a process's stdout lines on a thread into a queue."""

    def __init__(self, proc):
        self.q = queue.Queue()
        self.t = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self.t.start()

    def _pump(self, stream):
        for raw in stream:
            self.q.put(raw.decode(errors="replace").rstrip("\n"))
        self.q.put(None)

    def get(self, timeout):
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise Broke(f"no output within {timeout}s")
        if line is None:
            raise Broke("the process closed its output")
        return line


class World:
    def __init__(self, hsmsim, root, modules, init_delay_ms, extra=()):
        self.hsmsim = hsmsim
        self.root = root
        self.kmdata = os.path.join(root, "km")
        os.mkdir(self.kmdata, 0o700)
        self.socket = os.path.join(root, "c.sock")
        self.env = dict(os.environ, NFAST_KMDATA=self.kmdata, HSMSIM_SOCKET=self.socket,
                        HSMSIM_ADMIN_SOCKET=os.path.join(root, "a.sock"), LC_ALL="C",
                        NO_COLOR="1")
        self.env.pop("NFAST_NFKM_TOKENSFILE", None)
        self.log = open(os.path.join(root, "serve.log"), "wb")
        self.proc = subprocess.Popen(
            [hsmsim, "serve", "--modules", str(modules), "--init-delay-ms", str(init_delay_ms),
             *map(str, extra)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        self.lines = Lines(self.proc)
        try:
            line = self.lines.get(10)
            if not READY_RE.match(line):
                raise Broke(f"hsmsim serve: unexpected first line {line!r}")
        except Broke:
            self.stop()
            raise

    def cli(self, *args, timeout=30):
        r = subprocess.run([self.hsmsim, *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise Broke(f"hsmsim {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr}")
        return r.stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def end(proc, timeout=10):
    """SIGTERM, then SIGKILL after timeout seconds; None and ended processes pass."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def start_app(world, args, d, tokens_file, card):
    """`ha_app first`: signs in a loop through the PKCS#11 module; READY once it signs."""
    env = dict(world.env, CKNFAST_RELOAD_KEYS="1", CKNFAST_LOADSHARING="1",
               NFAST_NFKM_TOKENSFILE=tokens_file, PRELOADRUN_PKCS11_LOG=os.path.join(d, "app.log"))
    with open(os.path.join(d, "app.stderr"), "wb") as err:
        app = subprocess.Popen([args.app, "first", "--pkcs11", args.pkcs11, "--socket",
                                world.socket, "--token", card, "--module", str(MODULE)],
                               env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    lines = Lines(app)
    try:
        line = lines.get(30)
        if not line.startswith("READY "):
            raise Broke(f"unexpected first line {line!r}")
    except Broke as e:
        app.kill()
        app.wait()
        raise Broke(f"ha_app: {e}: {open(os.path.join(d, 'app.stderr')).read()}")
    return app, lines


def first_signature(app_lines, gen):
    """The stamp of ha_app's FIRST line for module 2's generation gen."""
    while True:
        line = app_lines.get(30)
        kind, stamp, rest = (line.split(" ", 2) + [""])[:3]
        if kind != "FIRST":
            raise Broke(f"ha_app: unexpected {line!r}")
        if int(rest.split()[0]) == gen:
            return int(stamp)


def measure(world, args, passfile, cards, hashes, ntokens):
    """One scenario: ntokens tokens, args.clears clears of MODULE."""
    d = os.path.join(world.root, f"t{ntokens}")
    os.mkdir(d, 0o700)
    tokens_file = os.path.join(d, "tokens.json")
    err_path = os.path.join(d, "preloadrun.stderr")
    cmd = [args.preloadrun]
    for c in cards[:ntokens]:
        cmd += ["-s", c]
    cmd += ["--passphrase-file", passfile, "-f", tokens_file, "--socket", world.socket,
            "--", "sleep", "100000"]
    with open(err_path, "wb") as err:
        pre = subprocess.Popen(cmd, env=world.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err)
    probe = loader = app = None
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(tokens_file):
            if pre.poll() is not None:
                raise Broke(f"preloadrun exited {pre.returncode}: {open(err_path).read()}")
            if time.monotonic() > deadline:
                raise Broke("preloadrun published no tokens file within 20 s")
            time.sleep(0.01)
        probe = subprocess.Popen([args.probe, "watch", "--socket", world.socket,
                                  "--tokens-file", tokens_file],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        lines = Lines(probe)
        if not lines.get(10).startswith("READY "):
            raise Broke("ha_probe watch: no READY line")

        loader = subprocess.Popen([args.probe, "load", "--socket", world.socket, "--module",
                                   str(MODULE), "--passphrase-file", passfile, "--reps", "0",
                                   *hashes[:ntokens]],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        loads = Lines(loader)
        if args.first_signature:
            app, app_lines = start_app(world, args, d, tokens_file, cards[0])
        latencies = []
        direct = []
        firsts = []
        after_publish = []
        for _ in range(args.clears):
            world.cli("module", "clear", MODULE)
            t_event = gen = None
            while True:
                line = lines.get(10)
                kind, stamp, rest = (line.split(" ", 2) + [""])[:3]
                if kind == "EVENT":
                    number, state, generation = rest.split()[:3]
                    if int(number) == MODULE and state == "usable":
                        t_event, gen = int(stamp), int(generation)
                elif kind == "PUBLISH" and t_event is not None:
                    doc = json.loads(rest)
                    ok = all(any(e["module"] == MODULE and e["module_generation"] == gen
                                 for e in t["loaded"]) for t in doc["tokens"])
                    if ok and len(doc["tokens"]) == ntokens:
                        latencies.append((int(stamp) - t_event) / 1e6)
                        t_publish = int(stamp)
                        break
            if app is not None:
                t_first = first_signature(app_lines, gen)
                firsts.append((t_first - t_event) / 1e6)
                after_publish.append((t_first - t_publish) / 1e6)
            loader.stdin.write(b"\n")
            loader.stdin.flush()
            line = loads.get(30)
            if not line.startswith("LOAD "):
                raise Broke(f"ha_probe load: unexpected {line!r}")
            direct.append(int(line.split()[1]) / 1e6)
        loader.stdin.close()
        if loader.wait(10) != 0:
            raise Broke(f"ha_probe load: exit {loader.returncode}")
        probe.stdin.close()
        probe.wait(10)
        probe = None
        if app is not None:
            app.stdin.close()
            if app.wait(10) != 0:
                raise Broke(f"ha_app: exit {app.returncode}")
    finally:
        for proc in (probe, loader, app):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        end(pre, 20)

    log = open(err_path, errors="replace").read()
    logged = [float(m.group(1)) for m in re.finditer(
        rf"module {MODULE}: {ntokens} token\(s\) loaded in (\d+) ms", log)]
    if len(logged) < args.clears:
        print(f"warning: {len(logged)} load lines in preloadrun's log for {args.clears} clears",
              file=sys.stderr)
    logged = logged[-args.clears:]

    paired = [lat - d for lat, d in zip(latencies, direct)]
    first_paired = [f - d for f, d in zip(firsts, direct)]
    first_logged = [f - lg for f, lg in zip(firsts, logged)] if len(logged) == len(
        firsts) else []
    per_clear = [lat - lg for lat, lg in zip(latencies, logged)] if len(logged) == len(
        latencies) else []
    return {
        "tokens": ntokens,
        "clears": len(latencies),
        "reload_median": statistics.median(latencies),
        "reload_p99": percentile(latencies, 99),
        "logged_median": statistics.median(logged) if logged else float("nan"),
        "direct_median": statistics.median(direct),
        "direct_p99": percentile(direct, 99),
        "overhead_median": statistics.median(paired),
        "overhead_p99": percentile(paired, 99),
        "overhead_vs_logged": statistics.median(per_clear) if per_clear else float("nan"),
        "first_median": statistics.median(firsts) if firsts else float("nan"),
        "first_p99": percentile(firsts, 99) if firsts else float("nan"),
        "first_overhead_median": statistics.median(first_paired) if firsts else float("nan"),
        "first_overhead_p99": percentile(first_paired, 99) if firsts else float("nan"),
        "first_vs_logged_median": statistics.median(first_logged) if first_logged else float(
            "nan"),
        "first_vs_logged_p99": percentile(first_logged, 99) if first_logged else float("nan"),
        "after_publish_median": statistics.median(after_publish) if firsts else float("nan"),
        "after_publish_p99": percentile(after_publish, 99) if firsts else float("nan"),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hsmsim", default=find_default("hsmsim", "HSMSIM"))
    ap.add_argument("--preloadrun", default=find_default("preloadrun", "PRELOADRUN"))
    ap.add_argument("--probe", default=find_default("ha_probe", "HA_PROBE"))
    ap.add_argument("--app", default=find_default("ha_app", "HA_APP"),
                    help="ha_app, the application of --first-signature")
    ap.add_argument("--pkcs11", default=os.environ.get("PRELOADRUN_PKCS11_MODULE"),
                    help="libpreloadrun-pkcs11.so, for --first-signature")
    ap.add_argument("--first-signature", action="store_true",
                    help="also time the first signature module 2 serves for an application")
    ap.add_argument("--clears", type=int, default=None,
                    help="clears per row (default 50; 100 with --first-signature)")
    ap.add_argument("--tokens", default="1,10", help="token counts, comma-separated (max 10)")
    ap.add_argument("--init-delay-ms", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.clears is None:
        args.clears = 100 if args.first_signature else 50
    for name in ("hsmsim", "preloadrun", "probe") + (("app",) if args.first_signature else ()):
        if not getattr(args, name) or not os.access(getattr(args, name), os.X_OK):
            ap.error(f"--{name}: not an executable: {getattr(args, name)}")
    if args.first_signature and not (args.pkcs11 and os.path.isfile(args.pkcs11)):
        ap.error(f"--pkcs11: not a file: {args.pkcs11}")
    counts = [int(x) for x in args.tokens.split(",")]
    if args.clears < 1 or not counts or min(counts) < 1 or max(counts) > 10:
        ap.error("--clears >= 1, --tokens between 1 and 10")

    root = tempfile.mkdtemp(prefix="hb", dir="/tmp")
    world = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # runs the finally clauses
    try:
        world = World(args.hsmsim, root, 2, args.init_delay_ms)
        passfile = os.path.join(root, "pass")
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"bench passphrase")
        os.close(fd)
        cards = [f"bench{i}" for i in range(max(counts))]
        for c in cards:
            world.cli("softcard", "create", c, "--passphrase-file", passfile)
        by_name = {c["name"]: c["hash"] for c in json.loads(world.cli("softcard", "list",
                                                                      "--json"))}
        hashes = [by_name[c] for c in cards]
        if args.first_signature:
            world.cli("key", "generate", "--type", "ec-p256", "--label", "app", "--protect",
                      f"softcard:{cards[0]}", "--passphrase-file", passfile)
        results = [measure(world, args, passfile, cards, hashes, n) for n in counts]
    except Broke as e:
        print(f"bench_ha_reload: {e} (work directory {root} kept)", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if world:
            world.stop()
        if not args.keep:  # also when interrupted or killed (SIGTERM)
            shutil.rmtree(root, ignore_errors=True)

    print(f"HA reload: hsmsim 2 modules, init delay {args.init_delay_ms} ms, "
          f"{args.clears} clears of module {MODULE} per row; times in ms")
    print("  usable event -> tokens file published with the new handles (reload), vs the "
          "load itself (connect + load K tokens, measured directly; preloadrun's own log)")
    head = (f"{'tokens':>6} {'clears':>6} {'reload med':>10} {'reload p99':>10} "
            f"{'load med':>9} {'load p99':>9} {'logged med':>10} {'overhead med':>12} "
            f"{'overhead p99':>12} {'ovh/logged':>10}")
    print(head)
    print("-" * len(head))
    for r in results:
        print(f"{r['tokens']:>6} {r['clears']:>6} {r['reload_median']:>10.2f} "
              f"{r['reload_p99']:>10.2f} {r['direct_median']:>9.2f} {r['direct_p99']:>9.2f} "
              f"{r['logged_median']:>10.1f} {r['overhead_median']:>12.2f} "
              f"{r['overhead_p99']:>12.2f} {r['overhead_vs_logged']:>10.2f}")
    print("  overhead = reload - load, per clear (paired); ovh/logged = reload - "
          "preloadrun's own logged load time (ms resolution)")
    met = all(r["overhead_median"] < TARGET_OVERHEAD_MS for r in results)
    print(f"target: median overhead < {TARGET_OVERHEAD_MS:g} ms: {'met' if met else 'NOT met'}")
    if args.first_signature:
        print("  usable event -> first signature module 2 serves for the application "
              "(ha_app through libpreloadrun-pkcs11.so, load-sharing, key reloading)")
        head = (f"{'tokens':>6} {'first med':>10} {'first p99':>10} {'ovh med':>8} "
                f"{'ovh p99':>8} {'ovh/logged med':>14} {'ovh/logged p99':>14} "
                f"{'after pub med':>13} {'after pub p99':>13}")
        print(head)
        print("-" * len(head))
        for r in results:
            print(f"{r['tokens']:>6} {r['first_median']:>10.2f} {r['first_p99']:>10.2f} "
                  f"{r['first_overhead_median']:>8.2f} {r['first_overhead_p99']:>8.2f} "
                  f"{r['first_vs_logged_median']:>14.2f} {r['first_vs_logged_p99']:>14.2f} "
                  f"{r['after_publish_median']:>13.2f} {r['after_publish_p99']:>13.2f}")
        print("  ovh = first signature - load, per clear (paired); ovh/logged = first signature - "
              "preloadrun's own logged load of that clear (ms resolution); after pub = first "
              "signature - the publication (the application's own share)")
        # Judged against the same clear's load (preloadrun's own timing, which
        # truncates to the ms: never in the figure's favour). ha_probe's load
        # is another load (another connection, other key derivations), whose
        # own spread enters the paired p99; it is shown, not judged.
        def judged(r, which):
            logged = r[f"first_vs_logged_{which}"]
            return r[f"first_overhead_{which}"] if logged != logged else logged  # NaN: no log
        first_met = all(judged(r, "median") <= TARGET_FIRST_OVERHEAD_MS and
                        judged(r, "p99") <= TARGET_FIRST_OVERHEAD_MS for r in results)
        print(f"target: first signature <= {TARGET_FIRST_OVERHEAD_MS:g} ms beyond the same "
              f"clear's load (ovh/logged), median and p99: {'met' if first_met else 'NOT met'}")
    fields = []
    for r in results:
        p = f"tokens{r['tokens']}_"
        fields += [f"{p}reload_median_ms={r['reload_median']:.3f}",
                   f"{p}reload_p99_ms={r['reload_p99']:.3f}",
                   f"{p}load_median_ms={r['direct_median']:.3f}",
                   f"{p}overhead_median_ms={r['overhead_median']:.3f}",
                   f"{p}overhead_p99_ms={r['overhead_p99']:.3f}",
                   f"{p}overhead_vs_logged_median_ms={r['overhead_vs_logged']:.3f}"]
        if args.first_signature:
            fields += [f"{p}first_sig_median_ms={r['first_median']:.3f}",
                       f"{p}first_sig_p99_ms={r['first_p99']:.3f}",
                       f"{p}first_overhead_median_ms={r['first_overhead_median']:.3f}",
                       f"{p}first_overhead_p99_ms={r['first_overhead_p99']:.3f}",
                       f"{p}first_overhead_vs_logged_median_ms="
                       f"{r['first_vs_logged_median']:.3f}",
                       f"{p}first_overhead_vs_logged_p99_ms={r['first_vs_logged_p99']:.3f}",
                       f"{p}first_after_publish_median_ms={r['after_publish_median']:.3f}",
                       f"{p}first_after_publish_p99_ms={r['after_publish_p99']:.3f}"]
    tail = ""
    if args.first_signature:
        tail = (f" target_first_overhead_ms={TARGET_FIRST_OVERHEAD_MS:g} "
                f"first_met={'yes' if first_met else 'no'}")
    print("RESULT " + " ".join(fields) + f" target_overhead_ms={TARGET_OVERHEAD_MS:g} "
          f"met={'yes' if met else 'no'}" + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
