#!/usr/bin/python3
"""Supervision overhead of preloadrun next to tini and dumb-init, in one run.

1. Start-up and tear-down: the median wall time of `preloadrun -q -- true`
   (no token; a running hsmsim, so it connects, lists the modules, publishes
   and removes a tokens file) against `tini -- true` and `dumb-init true`,
   over --runs runs each, interleaved (round robin) so that drift in the
   machine's load hits all three alike; and the ratios (target: preloadrun
   within 1.5x of tini). The tokens file goes where it goes on an ordinary
   system, in a runtime directory on tmpfs (XDG_RUNTIME_DIR under /dev/shm;
   --runtime-parent /tmp measures one on a disk, where each publication is
   synced).
2. Idle supervision: each supervisor runs `sleep --seconds` (the three at
   once). From /proc/<supervisor>/status: voluntary and non-voluntary context
   switches once the child runs and again just before it ends (preloadrun
   has no timers: the count should not grow), and the peak RSS (VmHWM;
   target for preloadrun: at most 4 MiB).

Prints a table and one `RESULT key=value ...` line. Exits 0 whatever the
figures (they are reported, not judged here); 1 when
something could not be measured at all.

    bench_supervisor.py [--preloadrun P] [--hsmsim H] [--runs 50] [--seconds 10]
                        [--runtime-parent /dev/shm]
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# The shared helper of the Python tests, for reading hsmsim's ready line.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "support"))
from procs import read_first_line  # noqa: E402

READY_RE = re.compile(r"^hsmsim: ready: .* socket (?P<socket>\S+), admin socket \S+$")
RSS_TARGET_KIB = 4 * 1024
RATIO_TARGET = 1.5


def die(msg):
    print(f"bench_supervisor: {msg}", file=sys.stderr)
    sys.exit(1)


class Service:
    """`hsmsim serve` in a private directory under /tmp (short socket path)."""

    def __init__(self, hsmsim, runtime_parent):
        self.root = tempfile.mkdtemp(prefix="hs", dir="/tmp")
        km = os.path.join(self.root, "km")
        os.mkdir(km, 0o700)
        self.xdg = tempfile.mkdtemp(prefix="hsx", dir=runtime_parent)
        self.socket = os.path.join(self.root, "c.sock")
        self.env = {k: v for k, v in os.environ.items()
                    if k not in ("NOTIFY_SOCKET", "NFAST_NFKM_TOKENSFILE")}
        self.env.update(NFAST_KMDATA=km, HSMSIM_SOCKET=self.socket,
                        HSMSIM_ADMIN_SOCKET=os.path.join(self.root, "a.sock"),
                        XDG_RUNTIME_DIR=self.xdg, LC_ALL="C")
        with open(os.path.join(self.root, "serve.log"), "wb") as log:
            self.proc = subprocess.Popen([hsmsim, "serve", "--modules", "2",
                                          "--init-delay-ms", "0"],
                                         env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=log)
        line = read_first_line(self.proc, 10.0)
        if line is None or not READY_RE.match(line):
            self.stop()
            die(f"hsmsim serve did not get ready ({line!r}); see {self.root}/serve.log")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.xdg, ignore_errors=True)


def filesystem_of(path):
    """The type of the file system holding `path`, from /proc/self/mounts."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and (real == parts[1] or real.startswith(
                        parts[1].rstrip("/") + "/")) and len(parts[1]) >= len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def proc_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
    except (FileNotFoundError, ProcessLookupError):
        return None


def kib(value):
    return int(value.split()[0])


def children(pid):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(name))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                pass
    return out


def time_runs(commands, runs, env):
    """{name: [seconds...]}, round robin, after one warm-up run each."""
    times = {name: [] for name in commands}
    for i in range(runs + 1):
        for name, argv in commands.items():
            t0 = time.perf_counter()
            r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                die(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.decode()[-500:]}")
            if i > 0:
                times[name].append(dt)
    return times


def idle(commands, seconds, env):
    """Runs every supervisor over `sleep seconds` at once; returns
    {name: {ctxt_start, ctxt_end, nv_start, nv_end, vmhwm_kib, status}}."""
    started = time.monotonic()
    procs = {name: subprocess.Popen(argv + ["sleep", str(seconds)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
             for name, argv in commands.items()}
    # Wait for each child to be running, then let the start-up settle.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(children(p.pid) or p.poll() is not None
                                                  for p in procs.values()):
        time.sleep(0.01)
    settle = min(0.3, seconds / 5)
    time.sleep(settle)
    out = {}
    for name, p in procs.items():
        st = proc_status(p.pid)
        if st is None or p.poll() is not None:
            die(f"{name} ended early: {p.stderr.read().decode()[-500:]}")
        out[name] = {"ctxt_start": int(st["voluntary_ctxt_switches"]),
                     "nv_start": int(st["nonvoluntary_ctxt_switches"])}
    # Just before the children end.
    time.sleep(max(0.0, started + seconds - 0.25 - time.monotonic()))
    for name, p in procs.items():
        st = proc_status(p.pid)
        if st is None or p.poll() is not None:
            die(f"{name} ended before the end sample (raise --seconds)")
        out[name].update(ctxt_end=int(st["voluntary_ctxt_switches"]),
                         nv_end=int(st["nonvoluntary_ctxt_switches"]),
                         vmhwm_kib=kib(st["VmHWM"]), vmrss_kib=kib(st["VmRSS"]))
    for name, p in procs.items():
        try:
            out[name]["status"] = p.wait(seconds + 10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            die(f"{name} did not end after its child")
        p.stderr.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preloadrun", default=os.environ.get("PRELOADRUN"))
    ap.add_argument("--hsmsim", default=os.environ.get("HSMSIM"))
    ap.add_argument("--runs", type=int, default=50, help="runs of each `true` (default 50)")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="idle supervision time (default 10)")
    ap.add_argument("--runtime-parent", default="/dev/shm" if os.path.isdir("/dev/shm") else "/tmp",
                    help="where the runtime directory (XDG_RUNTIME_DIR) is made "
                         "(default /dev/shm: tmpfs, as /run/user is)")
    args = ap.parse_args()
    if not args.preloadrun or not args.hsmsim:
        die("give --preloadrun and --hsmsim (or set PRELOADRUN and HSMSIM)")
    if args.runs < 1 or args.seconds < 1:
        die("--runs must be >= 1 and --seconds >= 1")

    baselines = {}
    for name, argv in (("tini", ["tini", "--"]), ("dumb-init", ["dumb-init"])):
        path = shutil.which(argv[0])
        if path:
            baselines[name] = [path] + argv[1:]
        else:
            print(f"bench_supervisor: {argv[0]} not found: no {name} baseline", file=sys.stderr)

    svc = Service(args.hsmsim, args.runtime_parent)
    fs_type = filesystem_of(svc.xdg)
    try:
        supervisors = {"preloadrun": [args.preloadrun, "-q", "--"], **baselines}
        times = time_runs({n: a + ["true"] for n, a in supervisors.items()}, args.runs, svc.env)
        idle_figures = idle(supervisors, args.seconds, svc.env)
        left = os.listdir(os.path.join(svc.xdg, "preloadrun")) if os.path.isdir(
            os.path.join(svc.xdg, "preloadrun")) else []
    finally:
        svc.stop()

    med = {n: statistics.median(t) * 1000 for n, t in times.items()}
    p90 = {n: sorted(t)[max(0, int(len(t) * 0.9) - 1)] * 1000 for n, t in times.items()}
    print(f"supervisor start-up + tear-down, `... true`, {args.runs} runs each "
          f"(median and p90 wall time, ms; runtime directory on {fs_type}):")
    print(f"  {'supervisor':<12} {'median':>9} {'p90':>9} {'preloadrun/it':>14}")
    for n in times:
        ratio = med["preloadrun"] / med[n] if med[n] else float("nan")
        print(f"  {n:<12} {med[n]:>9.2f} {p90[n]:>9.2f} {ratio:>13.2f}x")
    print()
    print(f"idle supervision of `sleep {args.seconds:g}` (from /proc/<supervisor>/status):")
    print(f"  {'supervisor':<12} {'vol. ctxt start':>15} {'end':>6} {'growth':>7} "
          f"{'nonvol growth':>14} {'VmHWM KiB':>10} {'exit':>5}")
    for n, f in idle_figures.items():
        print(f"  {n:<12} {f['ctxt_start']:>15} {f['ctxt_end']:>6} "
              f"{f['ctxt_end'] - f['ctxt_start']:>7} {f['nv_end'] - f['nv_start']:>14} "
              f"{f['vmhwm_kib']:>10} {f['status']:>5}")
    pr = idle_figures["preloadrun"]
    growth = pr["ctxt_end"] - pr["ctxt_start"]
    print()
    print(f"preloadrun: {'no' if growth == 0 else growth} voluntary context switch(es) while "
          f"idle (want none: no timers); peak RSS {pr['vmhwm_kib']} KiB "
          f"({'within' if pr['vmhwm_kib'] <= RSS_TARGET_KIB else 'OVER'} the 4 MiB target)")
    if left:
        print(f"WARNING: tokens files left behind: {left}")

    fields = [f"runs={args.runs}", f"idle_s={args.seconds:g}", f"runtime_fs={fs_type}",
              f"preloadrun_true_ms={med['preloadrun']:.2f}"]
    for n in baselines:
        key = n.replace("-", "_")
        fields += [f"{key}_true_ms={med[n]:.2f}",
                   f"ratio_vs_{key}={med['preloadrun'] / med[n]:.2f}"]
    fields += [f"idle_voluntary_ctxt_growth={growth}",
               f"idle_nonvoluntary_ctxt_growth={pr['nv_end'] - pr['nv_start']}",
               f"vmhwm_kib={pr['vmhwm_kib']}",
               f"rss_within_4mib={'yes' if pr['vmhwm_kib'] <= RSS_TARGET_KIB else 'no'}"]
    if "tini" in baselines:
        fields += [f"target=preloadrun<={RATIO_TARGET}*tini",
                   f"met={'yes' if med['preloadrun'] <= RATIO_TARGET * med['tini'] else 'no'}"]
    for n in baselines:
        f = idle_figures[n]
        key = n.replace("-", "_")
        fields += [f"{key}_idle_voluntary_ctxt_growth={f['ctxt_end'] - f['ctxt_start']}",
                   f"{key}_vmhwm_kib={f['vmhwm_kib']}"]
    print("RESULT " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
