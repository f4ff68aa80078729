#!/usr/bin/python3
"""bench_idle: wake-ups of preloadrun, hsmsim and the PKCS#11 module while
nothing happens. Target: 0 in 10 s for each (nothing that polls on a timer).

Starts, in a private directory under /tmp:
  - `hsmsim serve --modules 2 --init-delay-ms 0`, with a softcard card1 and an
    EC P-256 key (CKA_ID 01) it protects;
  - `preloadrun -s card1 --passphrase-file P -f TOKENS -- sleep 1000` (HA mode,
    the default): a connected client of hsmsim holding card1 loaded;
  - an application: a Python (PyKCS11) process that loads the module with
    NFAST_NFKM_TOKENSFILE=TOKENS and CKNFAST_RELOAD_KEYS=1 (so the module's
    reload watching is measured too), logs into card1, signs once with
    CKM_ECDSA and then blocks reading its stdin: a second idle client;
  - the baselines, in the same run: `sleep 1000` and, when installed,
    `tini -s -- sleep 1000`.
After --settle seconds, and again --seconds later, reads for each measured
process (hsmsim; preloadrun itself, not its child; the application, all of
its threads, the module's included; sleep; tini itself)
/proc/PID/task/*/status:
  wake-ups = the sum over its threads of voluntary_ctxt_switches +
             nonvoluntary_ctxt_switches, at the end minus at the start (a
             thread born in between counts whole); threads that appeared or
             disappeared are counted too (a vanished thread's last switches
             cannot be counted: it is reported instead).
The threads that woke are listed by tid and name (/proc/PID/task/TID/comm).

Prints a table and one line:
  RESULT seconds=.. preloadrun_wakeups=.. hsmsim_wakeups=.. module_wakeups=..
         sleep_wakeups=.. tini_wakeups=..|na target=0 met=yes|no
(met=yes when preloadrun, hsmsim and the module all show 0.) Exit status: 0
when it measured (whatever the figures), 1 when something broke, 2 bad usage.

    bench_idle.py --hsmsim H --preloadrun P --module M [--seconds 10] [--settle 1]
"""

import argparse
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# The shared helpers of the Python tests: hsmsim's ready line, /proc.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "support"))
from procs import children_of, read_first_line  # noqa: E402

READY_RE = re.compile(r"^hsmsim: ready: ")
PASSPHRASE = b"bench passphrase"
TARGET = 0
PR_SET_CHILD_SUBREAPER = 36

# The application: loads the module (argv[1]), logs into the token labelled
# card1 with the passphrase in the file argv[2], signs once with CKM_ECDSA
# with the key CKA_ID 01, prints READY, then blocks on stdin until it closes.
CLIENT = r"""
import sys
import PyKCS11
from PyKCS11 import *

lib = PyKCS11Lib()
lib.load(sys.argv[1])
with open(sys.argv[2]) as f:
    pin = f.read()
slot = [s for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == "card1"][0]
session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
session.login(pin)
key = session.findObjects([(CKA_CLASS, CKO_PRIVATE_KEY), (CKA_ID, (0x01,))])[0]
sig = session.sign(key, bytes(range(32)), PyKCS11.Mechanism(CKM_ECDSA))
if len(sig) != 64:
    sys.exit(f"unexpected signature length {len(sig)}")
print("READY", flush=True)
sys.stdin.read()
session.logout()
session.closeSession()
"""


class Broke(Exception):
    pass


class Interrupted(Exception):
    pass


def on_signal(signum, _frame):
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def drain(stream):
    """Reads a pipe to its end on a thread (so that the writer never blocks)."""
    def pump():
        for _ in stream:
            pass
    threading.Thread(target=pump, daemon=True).start()


def thread_counts(pid):
    """{tid: (voluntary, nonvoluntary, comm)} of every thread of PID; None
    when the process is gone (or a zombie)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    out = {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                st = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue  # the thread ended in between
        if st.get("State", "").startswith(("Z", "X")):
            continue
        out[int(tid)] = (int(st["voluntary_ctxt_switches"]),
                         int(st["nonvoluntary_ctxt_switches"]), comm)
    return out or None


def compare(start, end):
    """The figures of one subject between two thread_counts() snapshots."""
    vol = nonvol = 0
    woke = []
    for tid, (v, n, comm) in end.items():
        v0, n0 = start[tid][:2] if tid in start else (0, 0)
        dv, dn = v - v0, n - n0
        vol += dv
        nonvol += dn
        if dv + dn:
            woke.append((dv + dn, tid, comm, tid not in start))
    woke.sort(reverse=True)
    return {"threads": len(end), "new": len(set(end) - set(start)),
            "gone": len(set(start) - set(end)), "vol": vol, "nonvol": nonvol,
            "wakeups": vol + nonvol, "woke": woke}


class Bench:
    """Everything the run started, and its private directory."""

    def __init__(self, args):
        self.args = args
        self.root = tempfile.mkdtemp(prefix="hi", dir="/tmp")
        self.procs = []          # (name, Popen), in start order
        self.logs = []
        km = os.path.join(self.root, "km")
        os.mkdir(km, 0o700)
        xdg = os.path.join(self.root, "x")
        os.mkdir(xdg, 0o700)
        self.socket = os.path.join(self.root, "c.sock")
        drop = ("NOTIFY_SOCKET", "NFAST_NFKM_TOKENSFILE", "CKNFAST_RELOAD_KEYS",
                "CKNFAST_LOADSHARING", "HSMFLEET_SOCKET", "HSMFLEET_ADMIN_SOCKET",
                "HSMFLEET_SERVICE_USER", "HSMSIM_SERVICE_USER")
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env.update(NFAST_KMDATA=km, HSMSIM_SOCKET=self.socket,
                        HSMSIM_ADMIN_SOCKET=os.path.join(self.root, "a.sock"),
                        XDG_RUNTIME_DIR=xdg, LC_ALL="C", NO_COLOR="1")
        self.passfile = os.path.join(self.root, "pass")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, PASSPHRASE)
        os.close(fd)
        self.tokens_file = os.path.join(self.root, "t", "tokens.json")
        os.mkdir(os.path.dirname(self.tokens_file), 0o700)

    def log(self, name):
        f = open(os.path.join(self.root, f"{name}.log"), "wb")
        self.logs.append(f)
        return f

    def start(self, name, argv, env=None, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", self.log(name))
        p = subprocess.Popen(argv, env=env or self.env, **kw)
        self.procs.append((name, p))
        return p

    def logged(self, name):
        try:
            with open(os.path.join(self.root, f"{name}.log"), errors="replace") as f:
                return f.read()[-1500:]
        except OSError:
            return ""

    def cli(self, *args):
        r = subprocess.run([self.args.hsmsim, *map(str, args)], env=self.env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Broke(f"hsmsim {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr}")
        return r.stdout

    def setup(self):
        a = self.args
        hsmsim = self.start("hsmsim", [a.hsmsim, "serve", "--modules", "2",
                                       "--init-delay-ms", "0"], stdout=subprocess.PIPE)
        line = read_first_line(hsmsim, 10.0)
        if line is None or not READY_RE.match(line):
            raise Broke(f"hsmsim serve did not get ready ({line!r}): {self.logged('hsmsim')}")
        drain(hsmsim.stdout)
        self.cli("softcard", "create", "card1", "--passphrase-file", self.passfile)
        self.cli("key", "generate", "--type", "ec-p256", "--label", "k", "--id", "01",
                 "--protect", "softcard:card1", "--passphrase-file", self.passfile)

        pre = self.start("preloadrun", [a.preloadrun, "-s", "card1", "--passphrase-file",
                                        self.passfile, "-f", self.tokens_file, "--socket",
                                        self.socket, "--", "sleep", "1000"])
        deadline = time.monotonic() + 20
        while not os.path.exists(self.tokens_file):
            if pre.poll() is not None:
                raise Broke(f"preloadrun exited {pre.returncode}: {self.logged('preloadrun')}")
            if time.monotonic() > deadline:
                raise Broke("preloadrun published no tokens file within 20 s")
            time.sleep(0.02)

        env = dict(self.env, NFAST_NFKM_TOKENSFILE=self.tokens_file, CKNFAST_RELOAD_KEYS="1",
                   PRELOADRUN_PKCS11_LOG=os.path.join(self.root, "p11.log"))
        app = self.start("module", [sys.executable, "-c", CLIENT, a.module, self.passfile],
                         env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        line = read_first_line(app, 30.0)
        if line != "READY":
            raise Broke(f"the PyKCS11 application did not get ready ({line!r}): "
                        f"{self.logged('module')}")
        drain(app.stdout)

        self.start("sleep", ["sleep", "1000"])
        tini = shutil.which("tini")
        if tini:
            self.start("tini", [tini, "-s", "--", "sleep", "1000"])
        return {name: p for name, p in self.procs}

    def stop(self):
        """Ends everything it started, the last started first: the
        application by closing its stdin, the others with SIGTERM; SIGKILL
        after 10 s; then whatever was orphaned to this process (the
        supervisors' children)."""
        for name, p in reversed(self.procs):
            if p.poll() is None:
                if name == "module" and p.stdin:
                    try:
                        p.stdin.close()
                    except OSError:
                        pass
                else:
                    p.send_signal(signal.SIGTERM)
        for name, p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout):
                if stream:
                    try:
                        stream.close()
                    except OSError:
                        pass
        for _ in range(3):
            orphans = [pid for pid, _state in children_of(os.getpid())]
            if not orphans:
                break
            for pid in orphans:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for pid in orphans:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        for f in self.logs:
            f.close()


def measure(procs, args):
    """{name: compare(...)} for every subject, over args.seconds after
    args.settle."""
    subjects = {"preloadrun": procs["preloadrun"].pid, "hsmsim": procs["hsmsim"].pid,
                "module": procs["module"].pid, "sleep": procs["sleep"].pid}
    if "tini" in procs:
        subjects["tini"] = procs["tini"].pid
    time.sleep(args.settle)
    start = {}
    for name, pid in subjects.items():
        start[name] = thread_counts(pid)
        if start[name] is None or procs[name].poll() is not None:
            raise Broke(f"{name} ended before the start of the measurement")
    t0 = time.monotonic()
    time.sleep(args.seconds)
    end = {}
    for name, pid in subjects.items():
        end[name] = thread_counts(pid)
    elapsed = time.monotonic() - t0
    for name in subjects:
        if end[name] is None or procs[name].poll() is not None:
            raise Broke(f"{name} ended during the measurement")
    return {name: dict(compare(start[name], end[name]), pid=subjects[name])
            for name in subjects}, elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hsmsim", default=os.environ.get("HSMSIM"))
    ap.add_argument("--preloadrun", default=os.environ.get("PRELOADRUN"))
    ap.add_argument("--module", default=os.environ.get("PKCS11_MODULE"),
                    help="libpreloadrun-pkcs11.so")
    ap.add_argument("--seconds", type=float, default=10.0, help="idle time measured (10)")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="idle time before the measurement starts (1)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    for name in ("hsmsim", "preloadrun"):
        path = getattr(args, name)
        if not path or not os.access(path, os.X_OK):
            ap.error(f"--{name}: not an executable: {path}")
    if not args.module or not os.path.isfile(args.module):
        ap.error(f"--module: not a file: {args.module}")
    args.module = os.path.abspath(args.module)
    if args.seconds <= 0 or args.settle < 0:
        ap.error("--seconds > 0, --settle >= 0")

    # Orphans (a supervisor's child whose supervisor was killed) come to
    # this process, which ends them on the way out.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)

    bench = None
    status = 0
    try:
        bench = Bench(args)
        procs = bench.setup()
        figures, elapsed = measure(procs, args)
    except (Broke, Interrupted, OSError, subprocess.SubprocessError) as e:
        print(f"bench_idle: {e}", file=sys.stderr)
        for name, _p in bench.procs if bench else ():
            if bench.logged(name).strip():
                print(f"--- {name}.log (end):\n{bench.logged(name)}", file=sys.stderr)
        status = 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        if bench:
            bench.stop()
            if args.keep:
                print(f"work directory kept: {bench.root}", file=sys.stderr)
            else:
                shutil.rmtree(bench.root, ignore_errors=True)
    if status:
        return status

    labels = {"hsmsim": "hsmsim serve, 2 idle clients",
              "preloadrun": "preloadrun (HA, card1)",
              "module": "application + module",
              "sleep": "baseline: sleep",
              "tini": "baseline: tini -s"}
    print(f"idle wake-ups over {elapsed:.1f} s, after {args.settle:g} s settling "
          f"(voluntary + non-voluntary context switches, all threads):")
    head = (f"  {'subject':<30} {'pid':>7} {'threads':>7} {'new':>4} {'gone':>4} "
            f"{'vol':>6} {'nonvol':>6} {'wake-ups':>8}  {'per s':>6}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for name, f in figures.items():
        print(f"  {labels[name]:<30} {f['pid']:>7} {f['threads']:>7} {f['new']:>4} "
              f"{f['gone']:>4} {f['vol']:>6} {f['nonvol']:>6} {f['wakeups']:>8}  "
              f"{f['wakeups'] / elapsed:>6.1f}")
    woke = [(name, f) for name, f in figures.items() if f["woke"]]
    if woke:
        print("threads that woke (tid name: wake-ups; * born during the measurement):")
        for name, f in woke:
            print(f"  {name}: " + ", ".join(f"{tid} {comm}: {n}{'*' if new else ''}"
                                            for n, tid, comm, new in f["woke"][:8])
                  + (f", ... ({len(f['woke'])} threads)" if len(f["woke"]) > 8 else ""))
    # A thread that came or went is no idle process either (a vanished
    # thread's last wake-ups are not counted).
    met = all(figures[n]["wakeups"] == TARGET and not figures[n]["new"]
              and not figures[n]["gone"] for n in ("preloadrun", "hsmsim", "module"))
    print(f"target: {TARGET} wake-ups for preloadrun, hsmsim and the module: "
          f"{'met' if met else 'NOT met'}")
    tini = str(figures["tini"]["wakeups"]) if "tini" in figures else "na"
    print(f"RESULT seconds={args.seconds:g} preloadrun_wakeups={figures['preloadrun']['wakeups']} "
          f"hsmsim_wakeups={figures['hsmsim']['wakeups']} "
          f"module_wakeups={figures['module']['wakeups']} "
          f"sleep_wakeups={figures['sleep']['wakeups']} tini_wakeups={tini} "
          f"target={TARGET} met={'yes' if met else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
