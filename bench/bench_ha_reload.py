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

Prints a table and one line:
  RESULT tokens1_reload_median_ms=.. tokens1_reload_p99_ms=.. tokens1_load_median_ms=..
         tokens1_overhead_median_ms=.. tokens10_... target_overhead_ms=5 met=yes|no
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
    def __init__(self, hsmsim, root, modules, init_delay_ms):
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
            [hsmsim, "serve", "--modules", str(modules), "--init-delay-ms", str(init_delay_ms)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        self.lines = Lines(self.proc)
        line = self.lines.get(10)
        if not READY_RE.match(line):
            raise Broke(f"hsmsim serve: unexpected first line {line!r}")

    def cli(self, *args):
        r = subprocess.run([self.hsmsim, *map(str, args)], env=self.env, capture_output=True,
                           text=True, timeout=30)
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
    probe = loader = None
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
        latencies = []
        direct = []
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
                        break
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
    finally:
        for proc in (probe, loader):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if pre.poll() is None:
            pre.send_signal(signal.SIGTERM)
            try:
                pre.wait(20)
            except subprocess.TimeoutExpired:
                pre.kill()
                pre.wait()

    log = open(err_path, errors="replace").read()
    logged = [float(m.group(1)) for m in re.finditer(
        rf"module {MODULE}: {ntokens} token\(s\) loaded in (\d+) ms", log)]
    if len(logged) < args.clears:
        print(f"warning: {len(logged)} load lines in preloadrun's log for {args.clears} clears",
              file=sys.stderr)
    logged = logged[-args.clears:]

    paired = [lat - d for lat, d in zip(latencies, direct)]
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
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hsmsim", default=find_default("hsmsim", "HSMSIM"))
    ap.add_argument("--preloadrun", default=find_default("preloadrun", "PRELOADRUN"))
    ap.add_argument("--probe", default=find_default("ha_probe", "HA_PROBE"))
    ap.add_argument("--clears", type=int, default=50)
    ap.add_argument("--tokens", default="1,10", help="token counts, comma-separated (max 10)")
    ap.add_argument("--init-delay-ms", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    for name in ("hsmsim", "preloadrun", "probe"):
        if not getattr(args, name) or not os.access(getattr(args, name), os.X_OK):
            ap.error(f"--{name}: not an executable: {getattr(args, name)}")
    counts = [int(x) for x in args.tokens.split(",")]
    if args.clears < 1 or not counts or min(counts) < 1 or max(counts) > 10:
        ap.error("--clears >= 1, --tokens between 1 and 10")

    root = tempfile.mkdtemp(prefix="hb", dir="/tmp")
    world = None
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
        results = [measure(world, args, passfile, cards, hashes, n) for n in counts]
    except Broke as e:
        print(f"bench_ha_reload: {e} (work directory {root} kept)", file=sys.stderr)
        if world:
            world.stop()
        return 1
    world.stop()
    if not args.keep:
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
    fields = []
    for r in results:
        p = f"tokens{r['tokens']}_"
        fields += [f"{p}reload_median_ms={r['reload_median']:.3f}",
                   f"{p}reload_p99_ms={r['reload_p99']:.3f}",
                   f"{p}load_median_ms={r['direct_median']:.3f}",
                   f"{p}overhead_median_ms={r['overhead_median']:.3f}",
                   f"{p}overhead_p99_ms={r['overhead_p99']:.3f}",
                   f"{p}overhead_vs_logged_median_ms={r['overhead_vs_logged']:.3f}"]
    print("RESULT " + " ".join(fields) + f" target_overhead_ms={TARGET_OVERHEAD_MS:g} "
          f"met={'yes' if met else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
