#!/usr/bin/python3
"""soak: a chaos soak of preloadrun, its PKCS#11 module and hsmsim.

An application signs without pause while the fleet under it is cleared,
failed, restored, removed, enrolled, slowed down, made to fail operations,
and while the HSM service and preloadrun are restarted. Every signature is
verified; every error the application sees is put next to the state of the
fleet at that moment, to tell the errors that had to happen (no module could
serve) from the ones that must not (a module could).

What it runs, in a new private directory under /tmp:
  - `hsmsim serve --modules N` on a new world, with softcard "soakcard" and the
    keys it protects: EC P-256 (CKA_ID 01) and, with --rsa, RSA-2048 (CKA_ID 02);
  - `soak_client watch`: the observer. It subscribes to the service's module
    events (and polls the module list for what events do not carry: pending
    injected failures), watches the tokens file, and stamps everything with
    CLOCK_MONOTONIC;
  - `soak_client sign`: the application. T threads (--threads) each sign
    random messages through libpreloadrun-pkcs11 (dlopen), and verify every
    signature with OpenSSL against the public key read from the world. It
    reports every error with the PKCS#11 return code and when the call
    started and ended;
  - preloadrun, in one of two modes (--mode):
      supervised  `preloadrun -s soakcard -f FILE -- soak_client sign ...`
      service     `preloadrun -s soakcard -f FILE` (no command), and the
                  application started apart with the environment that
                  preloadrun prints; only this mode restarts preloadrun;
      both        (default) the supervised phase, then the service phase,
                  each with half the events, on the same fleet.
Then it fires random events with random gaps (mean --gap-ms), of every kind
that --kinds allows:
  clear, fail, restore, remove, add      `hsmsim module ...` (add keeps the
                                         fleet at --max-modules, at most 32)
  latency                                a module's latency set to 0..20 ms
  fail-next                              1..5 injected operation failures
  service-restart                        hsmsim stopped with SIGTERM or
                                         SIGKILL, started again on the same
                                         world and sockets (its ready line)
  preloadrun-restart                     (service phase) preloadrun stopped
                                         with SIGTERM or SIGKILL, started
                                         again on the same tokens file
A module is failed or removed while it is the last one up only with the
probability --empty-chance, so that most of the run has a module to serve.
At the end of each phase every module is restored, latencies and injected
failures are cancelled, and once every module serves again the application
must keep signing without error for --settle seconds.

How errors are classified. A module SERVES at time t when all of these hold:
  - the service is up: from the observer's subscription after a (re)start
    until the driver sends hsmsim its stop signal (or the observer loses it);
  - preloadrun is alive: from its start until the driver sends it its stop
    signal;
  - the module is usable (from the service's events and module lists), and
    no clear, fail or remove that the driver sent it is still on its way;
  - no injected failure is pending on it (from the driver's fail-next until
    a module list taken after that command shows none left);
  - the latest tokens file written by that preloadrun lists the softcard on
    the module at the module's current generation, loaded since the last
    service (re)start (the file's last_reload_ms).
An error is a call (C_SignInit + C_Sign) that returned an error; it started
at s and returned at e. It is
  a VIOLATION  when some module served throughout [s - grace, e] (--grace-ms):
               the application could have been served and was not;
  GRACE        when some module served throughout [s, e], but began serving
               less than the grace before s: the application may not have
               read the new tokens file yet (counted apart, not a violation);
  EXPECTED     otherwise: no module served throughout the call (the service
               or preloadrun was down or restarting, no module was usable,
               or the one that was had not been given the token yet).
Errors are grouped into incidents (errors less than 1 s apart); the report
gives each incident its count, return codes, class and cause, and for each
one with violations the fleet state at the first of them and the history
around it.

The report (text, or JSON with --json; --report FILE also writes the JSON):
duration, events by kind, signatures ok and bad, errors by class and cause,
the incidents, and memory (VmRSS, VmHWM), threads and open descriptors of
every process (hsmsim, preloadrun, the application) at the start and end of
each phase, with the most descriptors seen (sampled every second). The JSON
also lists every error (the first 5000) with its class and cause.

Exit status:
  0  no bad signature, no violation, every phase settled and signed again;
  1  a bad signature, a violation, a phase that did not settle or sign
     again, or a process that died or exited with an unexpected status;
  2  bad usage;
  3  the soak could not run (a program missing, the setup failed).
The work directory (logs of every process, the observer's and the
application's lines) is removed on success and kept otherwise (--keep: always).
"""

import argparse
import bisect
import collections
import json
import math
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

CARD = "soakcard"
PASSPHRASE = b"soak passphrase"
READY_RE = re.compile(r"^hsmsim: ready: ")
ALL_KINDS = ("clear", "fail", "restore", "remove", "add", "latency", "fail-next",
             "service-restart", "preloadrun-restart")
# Relative weights; restore grows with the number of modules down.
WEIGHTS = {"clear": 20, "fail": 8, "remove": 5, "add": 4, "latency": 8, "fail-next": 8,
           "service-restart": 3, "preloadrun-restart": 3}
RESTORE_WEIGHT_PER_DOWN = 12
LATENCIES_MS = (0, 0, 0, 1, 2, 5, 10, 20)
INCIDENT_GAP_NS = 1_000_000_000
MAX_LISTED_ERRORS = 5000        # in the JSON report, each with its class and cause
CKR_NAMES = {0x5: "CKR_GENERAL_ERROR", 0x6: "CKR_FUNCTION_FAILED", 0x30: "CKR_DEVICE_ERROR",
             0x32: "CKR_DEVICE_REMOVED", 0x60: "CKR_KEY_HANDLE_INVALID",
             0x70: "CKR_MECHANISM_INVALID", 0x90: "CKR_OPERATION_ACTIVE",
             0xB3: "CKR_SESSION_HANDLE_INVALID", 0xE0: "CKR_TOKEN_NOT_PRESENT",
             0x101: "CKR_USER_NOT_LOGGED_IN", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED"}


class Broke(Exception):
    """The soak itself cannot go on (exit 3)."""


class Died(Exception):
    """A process under test died or stopped answering: the soak ends there,
    failed (exit 1)."""


def now():
    return time.monotonic_ns()


def ckr_name(rv):
    return CKR_NAMES.get(rv, f"CKR 0x{rv:x}")


# ---- processes -------------------------------------------------------------------

def sample(pid):
    """Memory, threads and descriptors of a process, from /proc (None when
    gone). The descriptors of a process that is not dumpable (hsmsim,
    preloadrun) are root's to count: None for anyone else."""
    out = {"pid": pid, "fds": None}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key.lower() + "_kib"] = int(value.split()[0])
                elif key == "Threads":
                    out["threads"] = int(value)
    except (OSError, ValueError):
        return None
    try:
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:
        pass
    except OSError:
        return None
    return out


class Lines:
    """Reads a pipe on a thread; every line goes to `sink(line)`, the end to
    `sink(None)`."""

    def __init__(self, stream, sink):
        self.t = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
        self.t.start()

    @staticmethod
    def _pump(stream, sink):
        try:
            for raw in stream:
                sink(raw.decode(errors="replace").rstrip("\n"))
        except (OSError, ValueError):
            pass
        sink(None)


def stop_process(proc, sig=signal.SIGTERM, timeout=20):
    """Sends `sig` and waits; SIGKILL after `timeout`. Returns (status, killed)."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), True


# ---- the fleet model and the classification -----------------------------------------

class Module:
    __slots__ = ("state", "gen", "fail_next", "disturbed", "fail_cmd_end")

    def __init__(self):
        self.state = "unknown"
        self.gen = -1
        self.fail_next = 0
        self.disturbed = None      # (since, state, gen) while a command is on its way
        self.fail_cmd_end = 0      # readings taken before this cannot lower fail_next


class Model:
    """Replays the facts (time-ordered) and says which modules serve."""

    def __init__(self):
        self.svc_up = False
        self.epoch_wall_ms = 0     # wall clock of the last service stop: loads before it are gone
        self.pr_pid = None
        self.mods = {}
        self.published = {}        # module -> generation the softcard is loaded at
        self.file_gen = None

    def mod(self, number):
        m = self.mods.get(number)
        if m is None:
            m = self.mods[number] = Module()
        return m

    def apply(self, t, kind, data):
        if kind == "svc_kill":
            self.svc_up = False
            self.epoch_wall_ms = data["wall_ms"]
            self.published = {}
        elif kind == "down":
            self.svc_up = False
            self.published = {}
        elif kind == "up":
            self.svc_up = True
            self.mods = {}
            self.published = {}
        elif kind == "modules":
            for e in data:
                m = self.mod(e["number"])
                if m.disturbed and (e["state"], e["generation"]) != m.disturbed[1:]:
                    m.disturbed = None
                m.state, m.gen = e["state"], e["generation"]
                if e["fail_next"] > 0 or t >= m.fail_cmd_end:
                    m.fail_next = e["fail_next"]
        elif kind == "event":
            m = self.mod(data["module"])
            m.state, m.gen = data["state"], data["generation"]
            m.disturbed = None
        elif kind == "publish":
            doc = data
            if not self.svc_up or self.pr_pid is None or doc["owner"]["pid"] != self.pr_pid:
                return False
            reloaded = {m["number"]: m["last_reload_ms"] for m in doc["modules"]}
            self.published = {}
            self.file_gen = doc["generation"]
            for token in doc["tokens"]:
                if token["name"] != CARD:
                    continue
                for e in token["loaded"]:
                    if reloaded.get(e["module"], 0) >= self.epoch_wall_ms:
                        self.published[e["module"]] = e["module_generation"]
        elif kind == "removed":
            self.published = {}
        elif kind == "pr_start":
            self.pr_pid = data["pid"]
            self.published = {}
        elif kind == "pr_stop":
            self.pr_pid = None
            self.published = {}
        elif kind == "cmd":
            if data.get("module") is None:
                return True
            m = self.mod(data["module"])
            if data["kind"] in ("clear", "fail", "remove"):
                m.disturbed = (t, m.state, m.gen)
            elif data["kind"] == "fail-next":
                m.fail_next = max(m.fail_next, data["count"])
                m.fail_cmd_end = float("inf")
        elif kind == "cmd_end":
            if data.get("module") is None:
                return True
            m = self.mod(data["module"])
            if data["kind"] == "fail-next":
                m.fail_cmd_end = t
            elif data["kind"] in ("clear", "fail", "remove") and data["status"] != 0:
                m.disturbed = None
        return True

    def serving(self, number):
        m = self.mods.get(number)
        return (self.svc_up and self.pr_pid is not None and m is not None
                and m.state == "usable" and m.disturbed is None and m.fail_next == 0
                and self.published.get(number) == m.gen)

    def snapshot(self):
        mods = {}
        for n, m in sorted(self.mods.items()):
            mods[n] = {"state": m.state, "generation": m.gen, "fail_next": m.fail_next,
                       "changing": m.disturbed is not None,
                       "token_at_generation": self.published.get(n),
                       "serving": self.serving(n)}
        return {"service_up": self.svc_up, "preloadrun_pid": self.pr_pid,
                "tokens_file_generation": self.file_gen, "modules": mods}

    def cause(self):
        """Why no module serves, in a few words."""
        if not self.svc_up:
            return "service down (restarting)"
        if self.pr_pid is None:
            return "preloadrun down (restarting)"
        usable = [n for n, m in self.mods.items() if m.state == "usable"]
        if not usable:
            return "no usable module"
        with_token = [n for n in usable if self.published.get(n) == self.mods[n].gen]
        if not with_token:
            return "softcard not (yet) loaded on any usable module"
        if all(self.mods[n].fail_next > 0 for n in with_token):
            return "injected failures on every module with the softcard"
        if all(self.mods[n].disturbed is not None or self.mods[n].fail_next > 0
               for n in with_token):
            return "every module with the softcard being cleared, failed or removed"
        return "modules changed during the call"


class Analysis:
    def __init__(self, facts, t0):
        self.t0 = t0
        self.facts = sorted(facts, key=lambda f: (f[0], f[1]))
        model = Model()
        self.intervals = collections.defaultdict(list)   # module -> [[start, end|None]]
        self.snap_t = []
        self.snaps = []
        self.causes = []
        self.ignored_publications = 0
        open_since = {}
        for t, _, kind, data in self.facts:
            if model.apply(t, kind, data) is False:
                self.ignored_publications += 1
            numbers = set(model.mods) | set(open_since)
            for n in numbers:
                s = model.serving(n)
                if s and n not in open_since:
                    open_since[n] = t
                    self.intervals[n].append([t, None])
                elif not s and n in open_since:
                    del open_since[n]
                    self.intervals[n][-1][1] = t
            self.snap_t.append(t)
            self.snaps.append(model.snapshot())
            self.causes.append(model.cause())

    def served_throughout(self, a, b):
        """A module that served over all of [a, b], or None."""
        for n, ivs in self.intervals.items():
            for start, end in ivs:
                if start <= a and (end is None or end >= b):
                    return n
        return None

    def at(self, t):
        i = bisect.bisect_right(self.snap_t, t) - 1
        if i < 0:
            return None, "before the first observation"
        return self.snaps[i], self.causes[i]

    def classify(self, err, grace_ns):
        m = self.served_throughout(err["start"] - grace_ns, err["end"])
        if m is not None:
            return "violation", f"module {m} served throughout", m
        m = self.served_throughout(err["start"], err["end"])
        if m is not None:
            return "grace", f"module {m} began serving less than the grace before", m
        snap, cause = self.at(err["start"])
        return "expected", cause, None

    def history(self, at, before_ns=3_000_000_000, after_ns=500_000_000, before=45, after=15):
        """What happened around `at`, formatted: the driver's actions, module
        events, publications, restarts (module lists only right after a
        subscription); at most `before` lines up to `at` and `after` after."""
        lines = []
        previous = None
        for f in self.facts:
            if at - before_ns <= f[0] <= at + after_ns and (f[2] != "modules" or previous == "up"):
                lines.append(f)
            previous = f[2]
        head = [f for f in lines if f[0] <= at]
        tail = [f for f in lines if f[0] > at]
        out = [describe_fact(f, self.t0) for f in head[-before:]]
        out.append(f"  {rel(at, self.t0):9.3f} s  <- the violation")
        out += [describe_fact(f, self.t0) for f in tail[:after]]
        return out


def rel(t, t0):
    return (t - t0) / 1e9


def describe_fact(f, t0):
    t, _, kind, d = f
    head = f"  {rel(t, t0):9.3f} s  "
    if kind == "cmd":
        what = d["kind"] + (f" {d['module']}" if d.get("module") is not None else "")
        if d.get("count") is not None:
            what += f" {d['count']}"
        if d.get("signal"):
            what += f" ({d['signal']})"
        return head + f"driver: {what}"
    if kind == "cmd_end":
        return head + f"driver: {d['kind']} done (status {d['status']})"
    if kind == "event":
        return head + (f"module {d['module']}: {d['previous_state']} gen {d['previous_generation']}"
                       f" -> {d['state']} gen {d['generation']}")
    if kind == "modules":
        return head + "modules: " + ", ".join(
            f"{e['number']} {e['state']} g{e['generation']}"
            + (f" fail_next={e['fail_next']}" if e["fail_next"] else "")
            + (f" {e['latency_ms']}ms" if e["latency_ms"] else "") for e in d)
    if kind == "publish":
        on = []
        for token in d["tokens"]:
            on += [f"{e['module']}@g{e['module_generation']}" for e in token["loaded"]]
        return head + (f"tokens file generation {d['generation']} (pid {d['owner']['pid']}): "
                       f"softcard on {' '.join(on) or 'no module'}")
    if kind == "removed":
        return head + "tokens file removed"
    if kind == "up":
        return head + "service: subscribed"
    if kind == "down":
        return head + f"service: connection lost ({d['why']})"
    if kind == "svc_kill":
        return head + f"hsmsim pid {d['pid']} sent {d['signal']}"
    if kind == "svc_ready":
        return head + f"hsmsim pid {d['pid']} ready"
    if kind == "pr_start":
        return head + f"preloadrun pid {d['pid']} started"
    if kind == "pr_stop":
        return head + f"preloadrun pid {d['pid']} sent {d['signal']}"
    if kind == "pr_ready":
        return head + f"preloadrun pid {d['pid']} ready"
    return head + f"{kind} {d}"


# ---- the soak ---------------------------------------------------------------------

class Soak:
    def __init__(self, args, root):
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.kmdata = os.path.join(root, "km")
        os.mkdir(self.kmdata, 0o700)
        self.socket = os.path.join(root, "c.sock")
        self.admin_socket = os.path.join(root, "a.sock")
        self.tokens_file = os.path.join(root, "run", "tokens.json")
        os.mkdir(os.path.dirname(self.tokens_file), 0o700)
        self.passfile = os.path.join(root, "pass")
        fd = os.open(self.passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, PASSPHRASE)
        os.close(fd)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NFAST_", "CKNFAST_", "HSMSIM_", "PRELOADRUN_"))
               and k != "NOTIFY_SOCKET"}
        env.update(NFAST_KMDATA=self.kmdata, HSMSIM_SOCKET=self.socket,
                   HSMSIM_ADMIN_SOCKET=self.admin_socket, LC_ALL="C", NO_COLOR="1")
        self.env = env
        self.lock = threading.Lock()
        self.seq = 0
        self.facts = []
        self.events = []             # what the driver did: dicts
        self.errors = []             # the application's errors
        self.bad = []                # the application's bad signatures
        self.problems = []           # what makes the soak fail, besides errors
        self.processes = []          # [{role, phase, pid, start, end, ...}]
        self.max_fds = collections.defaultdict(int)
        self.live = {}               # role -> pid, for the sampler
        self.hsmsim = None
        self.watcher = None
        self.view = {}               # module -> last known entry (state, generation, ...)
        self.view_pub = None         # last tokens file seen
        self.view_up = False
        self.phase = None
        self.quiescing = False
        self.phase_results = []
        self.client = None
        self.client_lines = queue.Queue()
        self.client_stats = None
        self.fatal = []              # what the application said when it stopped on its own
        self.pr = None
        self.pr_env = None
        self.t0 = now()
        self.stop_sampler = threading.Event()

    # -- bookkeeping ------------------------------------------------------------
    def fact(self, kind, data=None, t=None):
        with self.lock:
            self.seq += 1
            self.facts.append((t if t is not None else now(), self.seq, kind, data or {}))

    def log(self, text):
        if self.args.verbose:
            print(f"soak: {rel(now(), self.t0):8.3f} s {text}", file=sys.stderr, flush=True)

    def sampler(self):
        while not self.stop_sampler.wait(1.0):
            with self.lock:
                live = dict(self.live)
            for role, pid in live.items():
                s = sample(pid)
                if s and s["fds"] is not None:
                    with self.lock:
                        self.max_fds[role] = max(self.max_fds[role], s["fds"])

    def record_process(self, role, pid, when):
        """Memory and descriptors of `role` at the start or the end of the
        phase; `instances` counts the processes that played it in between
        (restarts)."""
        s = sample(pid)
        with self.lock:
            entry = next((p for p in self.processes
                          if p["role"] == role and p["phase"] == self.phase), None)
            if entry is None:
                entry = {"role": role, "phase": self.phase, "pids": [pid]}
                self.processes.append(entry)
            elif pid not in entry["pids"]:
                entry["pids"].append(pid)
            entry[when] = s
            entry["instances"] = len(entry["pids"])
            if s and s["fds"] is not None:
                self.max_fds[role] = max(self.max_fds[role], s["fds"])

    def note_pid(self, role, pid):
        """A restart: one more process plays `role` in this phase."""
        with self.lock:
            self.live[role] = pid
            for p in self.processes:
                if p["role"] == role and p["phase"] == self.phase and pid not in p["pids"]:
                    p["pids"].append(pid)
                    p["instances"] = len(p["pids"])

    # -- hsmsim -------------------------------------------------------------------
    def cli(self, *args, check=True):
        r = subprocess.run([self.args.hsmsim, *map(str, args)], env=self.env,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise Broke(f"hsmsim {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr}")
        return r

    def start_hsmsim(self):
        log = open(os.path.join(self.root, "hsmsim.log"), "ab")
        proc = subprocess.Popen(
            [self.args.hsmsim, "serve", "--modules", str(self.args.modules),
             "--init-delay-ms", str(self.args.init_delay_ms)],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        log.close()
        first = queue.Queue()
        Lines(proc.stdout, first.put)
        try:
            line = first.get(timeout=30)
        except queue.Empty:
            line = None
        if line is None or not READY_RE.match(line):
            stop_process(proc, signal.SIGKILL)
            raise Broke(f"hsmsim serve printed no ready line (got {line!r}); "
                        f"see {self.root}/hsmsim.log")
        self.hsmsim = proc
        self.note_pid("hsmsim", proc.pid)
        self.fact("svc_ready", {"pid": proc.pid})
        return proc

    # -- the observer ---------------------------------------------------------------
    def start_watcher(self):
        proc = subprocess.Popen(
            [self.args.client, "watch", "--socket", self.socket, "--tokens-file",
             self.tokens_file, "--poll-ms", str(self.args.poll_ms)],
            env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(self.root, "watch.log"), "ab"))
        self.watcher = proc
        self.watch_out = open(os.path.join(self.root, "watch.out"), "w")
        Lines(proc.stdout, self.on_watch_line)
        self.wait_until("the observer to subscribe", lambda: self.view_up, 20)

    def on_watch_line(self, line):
        if line is None:
            self.watch_out.close()
            return
        self.watch_out.write(line + "\n")
        parts = line.split(" ", 2)
        if len(parts) < 2:
            return
        word, t = parts[0], int(parts[1])
        rest = parts[2] if len(parts) > 2 else ""
        with self.lock:
            if word == "UP":
                self.view_up = True
                self.view = {}
                self.fact_locked(t, "up", {})
            elif word == "DOWN":
                self.view_up = False
                self.fact_locked(t, "down", {"why": rest})
            elif word == "MODULES":
                mods = json.loads(rest)
                # the view is changed by events later: copies, not the fact's data
                self.view = {m["number"]: dict(m) for m in mods}
                self.fact_locked(t, "modules", mods)
            elif word == "EVENT":
                n, state, gen, pstate, pgen = rest.split()
                d = {"module": int(n), "state": state, "generation": int(gen),
                     "previous_state": pstate, "previous_generation": int(pgen)}
                m = self.view.setdefault(int(n), {"number": int(n), "fail_next": 0,
                                                  "latency_ms": 0})
                m["state"], m["generation"] = state, int(gen)
                self.fact_locked(t, "event", d)
            elif word == "PUBLISH":
                doc = json.loads(rest)
                self.view_pub = doc
                self.fact_locked(t, "publish", doc)
            elif word == "REMOVED":
                self.view_pub = None
                self.fact_locked(t, "removed", {})

    def fact_locked(self, t, kind, data):
        self.seq += 1
        self.facts.append((t, self.seq, kind, data))

    def mark_watcher(self):
        try:
            self.watcher.stdin.write(b"m\n")
            self.watcher.stdin.flush()
        except OSError:
            pass

    def wait_until(self, what, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise Broke(f"timed out after {timeout} s waiting for {what}")
            self.check_alive()
            time.sleep(0.02)

    # -- the application and preloadrun ------------------------------------------------
    def client_args(self):
        a = [self.args.client, "sign", "--module", self.args.module, "--token", CARD,
             "--ec-pubkey", os.path.join(self.root, "ec.pem"),
             "--threads", str(self.args.threads)]
        if self.args.rsa:
            a += ["--rsa-pubkey", os.path.join(self.root, "rsa.pem"), "--rsa-every", "10"]
        return a

    def client_env(self, base):
        env = dict(base)
        env["PRELOADRUN_PKCS11_LOG"] = os.path.join(self.root, f"pkcs11-{self.phase}.log")
        env["PRELOADRUN_PKCS11_LOG_LEVEL"] = self.args.module_log_level
        return env

    def on_client_line(self, line):
        if line is None:
            self.client_lines.put(None)
            return
        self.client_out.write(line + "\n")
        parts = line.split(" ", 2)
        word = parts[0]
        if word in ("ERR", "BAD") and len(parts) == 3:
            d = dict(kv.split("=", 1) for kv in parts[2].split())
            rec = {"end": int(parts[1]), "start": int(d["start"]), "thread": int(d["thread"]),
                   "key": d["key"], "phase": self.phase}
            if word == "ERR":
                rec["fn"] = d["fn"]
                rec["rv"] = int(d["rv"], 16)
                with self.lock:
                    self.errors.append(rec)
            else:
                rec["len"] = int(d["len"])
                with self.lock:
                    self.bad.append(rec)
        elif word in ("STATS", "DONE") and len(parts) == 3:
            d = dict(kv.split("=", 1) for kv in parts[2].split())
            with self.lock:
                self.client_stats = {k: int(v) for k, v in d.items()}
                self.client_stats["t"] = int(parts[1])
            if word == "DONE":
                self.client_lines.put(line)
        elif word in ("READY", "FATAL"):
            if word == "FATAL":
                self.fatal.append(line)
            self.client_lines.put(line)

    def wait_client_ready(self):
        try:
            line = self.client_lines.get(timeout=60)
        except queue.Empty:
            line = None
        if line is None or not line.startswith("READY "):
            raise Broke(f"the application did not start (got {line!r}); see {self.root}")
        pid = int(re.search(r"pid=(\d+)", line).group(1))
        with self.lock:
            self.live["client"] = pid
        return pid

    def stats(self):
        with self.lock:
            return dict(self.client_stats or {"ok": 0, "bad": 0, "err": 0})

    def start_service_preloadrun(self):
        """preloadrun without a command; returns once it printed the
        environment (its tokens file published). Retries while it refuses to
        start for want of a usable module."""
        for attempt in range(50):
            err = open(os.path.join(self.root, "preloadrun-service.log"), "ab")
            proc = subprocess.Popen(
                [self.args.preloadrun, "-s", CARD, "--passphrase-file", self.passfile,
                 "-f", self.tokens_file, "--socket", self.socket],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
            err.close()
            self.fact("pr_start", {"pid": proc.pid})
            env, lines = {}, []
            done = queue.Queue()
            Lines(proc.stdout, done.put)
            while True:
                try:
                    line = done.get(timeout=60)
                except queue.Empty:
                    line = None
                if line is None:
                    break
                lines.append(line)
                m = re.match(r"^(\w+)='(.*)'; export \w+;$", line)
                if m:
                    env[m.group(1)] = m.group(2)
                if line.startswith("echo preloadrun pid"):
                    break
            if line is not None:
                self.pr = proc
                self.note_pid("preloadrun", proc.pid)
                self.fact("pr_ready", {"pid": proc.pid})
                return env
            status, _ = stop_process(proc, signal.SIGKILL, 5)
            self.fact("pr_stop", {"pid": proc.pid, "signal": f"exited {status}"})
            if status != 125:
                raise Broke(f"preloadrun (service mode) exited {status}: {lines}; "
                            f"see {self.root}/preloadrun-service.log")
            self.note_event({"kind": "preloadrun-start-refused", "status": status})
            time.sleep(0.2)
        raise Broke("preloadrun (service mode) kept refusing to start")

    # -- events --------------------------------------------------------------------
    def note_event(self, ev):
        ev["t"] = now()
        ev["phase"] = self.phase
        ev["quiesce"] = self.quiescing
        self.events.append(ev)

    def modules_in(self, *states):
        with self.lock:
            return sorted(n for n, m in self.view.items() if m.get("state") in states)

    def admin(self, kind, module=None, *extra, count=None):
        d = {"kind": kind, "module": module, "count": count}
        self.fact("cmd", d)
        args = ["module", kind] + ([module] if module is not None else []) + list(extra)
        r = self.cli(*args, check=False)
        self.fact("cmd_end", {"kind": kind, "module": module, "status": r.returncode})
        ev = {"kind": kind, "module": module, "status": r.returncode}
        if count is not None:
            ev["count"] = count
        if extra:
            ev["args"] = list(extra)
        if r.returncode != 0:
            ev["stderr"] = r.stderr.strip()[-300:]
        if kind == "add" and r.returncode == 0:
            nums = re.findall(r"\d+", r.stdout)
            ev["module"] = int(nums[-1]) if nums else None
        self.note_event(ev)
        if kind == "fail-next":
            self.mark_watcher()
        return r

    def choose(self):
        """The next event: (kind, module or None, draw). The same draws are
        made for every event whatever it is, so that a seed gives the same
        sequence of draws; which events they make also depends on the state
        of the fleet, which timing may change."""
        draw = [self.rng.random() for _ in range(5)]
        kinds = [k for k in ALL_KINDS if k in self.args.kinds
                 and (k != "preloadrun-restart" or self.phase == "service")]
        up = self.modules_in("usable", "initialising")
        usable = self.modules_in("usable")
        down = self.modules_in("failed", "removed")
        with self.lock:
            total = len(self.view)
        weights = []
        for k in kinds:
            if k == "restore":
                w = RESTORE_WEIGHT_PER_DOWN * len(down)
            elif k == "add":
                w = WEIGHTS[k] if total < self.args.max_modules else 0
            elif k in ("clear", "fail", "remove"):
                w = WEIGHTS[k] if up else 0
            elif k in ("latency", "fail-next"):
                w = WEIGHTS[k] if usable else 0
            elif k == "preloadrun-restart":
                w = WEIGHTS[k] if usable else 0   # it would find nothing to load onto
            else:
                w = WEIGHTS[k]
            if w > 0:
                weights.append((k, w))
        if not weights:
            return None, None, draw
        x = draw[0] * sum(w for _, w in weights)
        for kind, w in weights:
            if x < w:
                break
            x -= w

        def pick(candidates):
            return candidates[min(len(candidates) - 1, int(draw[1] * len(candidates)))]

        if kind in ("fail", "remove"):
            target = pick(up)
            if len(up) == 1 and draw[3] >= self.args.empty_chance:
                kind = "clear"   # not the last module up, this time
            return kind, target, draw
        if kind == "restore":
            return kind, pick(down), draw
        if kind == "clear":
            return kind, pick(up), draw
        if kind in ("latency", "fail-next"):
            return kind, pick(usable), draw
        return kind, None, draw

    def fire(self, kind, target, draw):
        self.log(f"event {kind} {target if target is not None else ''}")
        if kind in ("clear", "fail", "restore", "remove"):
            self.admin(kind, target)
        elif kind == "add":
            self.admin("add")
        elif kind == "latency":
            ms = LATENCIES_MS[min(len(LATENCIES_MS) - 1, int(draw[2] * len(LATENCIES_MS)))]
            self.admin("latency", target, str(ms))
        elif kind == "fail-next":
            c = 1 + min(4, int(draw[2] * 5))
            self.admin("fail-next", target, str(c), count=c)
        elif kind == "service-restart":
            self.restart_hsmsim(signal.SIGTERM if draw[2] < 0.5 else signal.SIGKILL)
        elif kind == "preloadrun-restart":
            self.restart_preloadrun(signal.SIGTERM if draw[2] < 0.5 else signal.SIGKILL)

    def restart_hsmsim(self, sig):
        old = self.hsmsim
        self.fact("cmd", {"kind": "service-restart", "signal": sig.name})
        self.fact("svc_kill", {"pid": old.pid, "signal": sig.name,
                               "wall_ms": time.time_ns() // 1_000_000})
        with self.lock:
            self.live.pop("hsmsim", None)
        status, killed = stop_process(old, sig)
        if sig == signal.SIGTERM and (status != 0 or killed):
            self.problems.append(f"hsmsim pid {old.pid} exited {status} on SIGTERM"
                                 + (" (killed after 20 s)" if killed else ""))
        t_stopped = now()
        self.start_hsmsim()
        self.fact("cmd_end", {"kind": "service-restart", "status": 0})
        self.note_event({"kind": "service-restart", "signal": sig.name, "old_pid": old.pid,
                         "new_pid": self.hsmsim.pid, "status": status,
                         "down_ms": round((now() - t_stopped) / 1e6, 1)})
        # The next events need the new service's modules.
        self.wait_until("the observer to subscribe again",
                        lambda: self.view_up and self.view and self.newest("up") > t_stopped,
                        30)

    def newest(self, kind):
        with self.lock:
            for f in reversed(self.facts):
                if f[2] == kind:
                    return f[0]
        return 0

    def restart_preloadrun(self, sig):
        old = self.pr
        self.fact("cmd", {"kind": "preloadrun-restart", "signal": sig.name})
        self.fact("pr_stop", {"pid": old.pid, "signal": sig.name})
        with self.lock:
            self.live.pop("preloadrun", None)
        status, killed = stop_process(old, sig)
        if sig == signal.SIGTERM and (status != 0 or killed):
            self.problems.append(f"preloadrun pid {old.pid} exited {status} on SIGTERM"
                                 + (" (killed after 20 s)" if killed else ""))
        env = self.start_service_preloadrun()
        if env != self.pr_env:
            self.problems.append(f"preloadrun printed another environment after a restart: "
                                 f"{env} (was {self.pr_env})")
        self.fact("cmd_end", {"kind": "preloadrun-restart", "status": 0})
        self.note_event({"kind": "preloadrun-restart", "signal": sig.name, "old_pid": old.pid,
                         "new_pid": self.pr.pid, "status": status})

    def check_alive(self):
        if self.client is not None and self.client.poll() is not None:
            raise Died(f"the application (or its preloadrun) exited {self.client.returncode} "
                       f"in the {self.phase} phase{': ' if self.fatal else ''}"
                       f"{'; '.join(self.fatal)}; see {self.root}")
        if self.phase == "service" and self.pr is not None and self.pr.poll() is not None:
            raise Died(f"preloadrun pid {self.pr.pid} exited {self.pr.returncode} by itself; "
                       f"see {self.root}/preloadrun-service.log")
        if self.hsmsim is not None and self.hsmsim.poll() is not None:
            raise Died(f"hsmsim pid {self.hsmsim.pid} exited {self.hsmsim.returncode} by "
                       f"itself; see {self.root}/hsmsim.log")
        if self.watcher is not None and self.watcher.poll() is not None:
            raise Broke(f"the observer exited {self.watcher.returncode}; "
                        f"see {self.root}/watch.log")

    # -- the end of a phase ------------------------------------------------------------
    def whole(self):
        """Every module usable and (the first 32) carrying the softcard at its
        generation in a file of the live preloadrun."""
        with self.lock:
            view = {n: dict(m) for n, m in self.view.items()}
            doc = self.view_pub
        if not self.view_up or not view or doc is None:
            return False
        pid = self.pr.pid if self.phase == "service" else self.client.pid
        if doc["owner"]["pid"] != pid:
            return False
        loaded = {}
        for t in doc["tokens"]:
            if t["name"] == CARD:
                loaded = {e["module"]: e["module_generation"] for e in t["loaded"]}
        for n, m in view.items():
            if m["state"] != "usable" or m.get("fail_next", 0) or m.get("latency_ms", 0):
                return False
            if n <= 32 and loaded.get(n) != m["generation"]:
                return False
        return True

    def quiesce(self):
        self.quiescing = True
        try:
            return self._quiesce()
        finally:
            self.quiescing = False

    def _quiesce(self):
        for n in self.modules_in("failed", "removed"):
            self.admin("restore", n)
        with self.lock:
            view = {n: dict(m) for n, m in self.view.items()}
        for n, m in view.items():
            if m.get("latency_ms"):
                self.admin("latency", n, "0")
            if m.get("fail_next"):
                self.admin("fail-next", n, "0", count=0)
        self.mark_watcher()
        t = now()
        try:
            self.wait_until("every module to serve again", self.whole, self.args.settle_timeout)
        except Broke as e:
            self.problems.append(f"{self.phase} phase: the fleet did not settle: {e}")
            return None
        self.log(f"settled in {(now() - t) / 1e6:.0f} ms")
        return now()

    # -- a phase -----------------------------------------------------------------------
    def run_phase(self, phase, events, deadline):
        self.phase = phase
        result = {"phase": phase, "events_planned": events}
        self.client_lines = queue.Queue()
        self.client_out = open(os.path.join(self.root, f"client-{phase}.out"), "w")
        with self.lock:
            self.client_stats = None
        if phase == "supervised":
            err = open(os.path.join(self.root, "preloadrun-supervised.log"), "ab")
            self.client = subprocess.Popen(
                [self.args.preloadrun, "-s", CARD, "--passphrase-file", self.passfile,
                 "-f", self.tokens_file, "--socket", self.socket, "--", *self.client_args()],
                env=self.client_env(self.env), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err)
            err.close()
            self.pr = None
            self.fact("pr_start", {"pid": self.client.pid})
            with self.lock:
                self.live["preloadrun"] = self.client.pid
        else:
            self.pr_env = self.start_service_preloadrun()
            env = dict(self.env)
            env.update(self.pr_env)
            err = open(os.path.join(self.root, "client-service.log"), "ab")
            self.client = subprocess.Popen(self.client_args(), env=self.client_env(env),
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=err)
            err.close()
        Lines(self.client.stdout, self.on_client_line)
        client_pid = self.wait_client_ready()
        self.wait_until("the first signatures", lambda: self.stats()["ok"] > 0, 30)
        pr_pid = self.client.pid if phase == "supervised" else self.pr.pid
        self.record_process("hsmsim", self.hsmsim.pid, "start")
        self.record_process("preloadrun", pr_pid, "start")
        self.record_process("client", client_pid, "start")
        t_start = now()
        result["start_ns"] = t_start
        fired = 0
        while fired < events and (deadline is None or time.monotonic() < deadline):
            kind, target, draw = self.choose()
            if kind is None:
                break
            self.fire(kind, target, draw)
            fired += 1
            # exponential, mean --gap-ms, at most 4 times that
            gap = min(-math.log(1.0 - draw[4]) * self.args.gap_ms, 4 * self.args.gap_ms)
            end = time.monotonic() + gap / 1000.0
            while time.monotonic() < end:
                self.check_alive()
                time.sleep(min(0.02, max(0.0, end - time.monotonic())))
        result["events_fired"] = fired
        result["events_end_ns"] = now()
        settled = self.quiesce()
        result["settled"] = settled is not None
        if settled is not None:
            s0 = self.stats()
            e0 = len([e for e in self.errors if e["phase"] == phase])
            time.sleep(self.args.settle)
            self.check_alive()
            s1 = self.stats()
            e1 = len([e for e in self.errors if e["phase"] == phase])
            result["settle_ok"] = s1["ok"] - s0["ok"]
            result["settle_errors"] = e1 - e0
            if s1["ok"] <= s0["ok"]:
                self.problems.append(f"{phase} phase: no signature in the {self.args.settle} s "
                                     f"after the fleet was whole again")
            if e1 > e0:
                self.problems.append(f"{phase} phase: {e1 - e0} error(s) in the "
                                     f"{self.args.settle} s after the fleet was whole again")
        pr_pid = self.client.pid if phase == "supervised" else self.pr.pid
        self.record_process("hsmsim", self.hsmsim.pid, "end")
        self.record_process("preloadrun", pr_pid, "end")
        self.record_process("client", client_pid, "end")
        # The end: the application first, then its preloadrun.
        if phase == "supervised":
            self.fact("pr_stop", {"pid": self.client.pid, "signal": "SIGTERM"})
            status, killed = stop_process(self.client, signal.SIGTERM, 30)
            if status != 0 or killed:
                self.problems.append(f"supervised phase: preloadrun (and the application) "
                                     f"exited {status} on SIGTERM"
                                     + (" (killed after 30 s)" if killed else ""))
        else:
            status, killed = stop_process(self.client, signal.SIGTERM, 30)
            if status != 0 or killed:
                self.problems.append(f"service phase: the application exited {status} on "
                                     f"SIGTERM" + (" (killed after 30 s)" if killed else ""))
            self.fact("pr_stop", {"pid": self.pr.pid, "signal": "SIGTERM"})
            status, killed = stop_process(self.pr, signal.SIGTERM, 30)
            if status != 0 or killed:
                self.problems.append(f"service phase: preloadrun exited {status} on SIGTERM"
                                     + (" (killed after 30 s)" if killed else ""))
        try:
            line = self.client_lines.get(timeout=10)
        except queue.Empty:
            line = None
        if line is None or not line.startswith("DONE "):
            self.problems.append(f"{phase} phase: the application printed no DONE line")
        with self.lock:
            self.live.pop("client", None)
            self.live.pop("preloadrun", None)
        self.client_out.close()
        s = self.stats()
        result["ok"] = s["ok"]
        result["bad"] = s["bad"]
        result["err"] = s["err"]
        result["end_ns"] = now()
        self.client = None
        self.pr = None
        self.phase_results.append(result)

    # -- setup and the whole run ------------------------------------------------------------
    def setup(self):
        self.start_hsmsim()
        self.cli("softcard", "create", CARD, "--passphrase-file", self.passfile)
        self.cli("key", "generate", "--type", "ec-p256", "--label", "soak-ec", "--id", "01",
                 "--protect", f"softcard:{CARD}", "--passphrase-file", self.passfile)
        if self.args.rsa:
            self.cli("key", "generate", "--type", "rsa-2048", "--label", "soak-rsa", "--id",
                     "02", "--protect", f"softcard:{CARD}", "--passphrase-file", self.passfile)
        keys = {k["id"]: k for k in json.loads(self.cli("key", "list", "--json").stdout)}
        for kid, name in (("01", "ec.pem"), ("02", "rsa.pem")):
            if kid in keys:
                with open(os.path.join(self.root, name), "w") as f:
                    f.write(keys[kid]["public_key_pem"])
        self.start_watcher()
        threading.Thread(target=self.sampler, daemon=True).start()

    def run(self):
        self.setup()
        phases = ["supervised", "service"] if self.args.mode == "both" else [self.args.mode]
        deadline = (time.monotonic() + self.args.duration) if self.args.duration else None
        left = self.args.events
        for i, phase in enumerate(phases):
            n = left // (len(phases) - i) if left else float("inf")   # 0: --duration only
            left -= 0 if n == float("inf") else n
            phase_deadline = None
            if deadline is not None:
                phase_deadline = time.monotonic() + (deadline - time.monotonic()) / (
                    len(phases) - i)
            self.run_phase(phase, n, phase_deadline)
        self.phase = None
        self.stop_sampler.set()
        self.fact("svc_kill", {"pid": self.hsmsim.pid, "signal": "SIGTERM",
                               "wall_ms": time.time_ns() // 1_000_000})
        status, killed = stop_process(self.hsmsim, signal.SIGTERM)
        if status != 0 or killed:
            self.problems.append(f"hsmsim exited {status} on SIGTERM at the end")
        self.hsmsim = None
        self.watcher.stdin.close()
        stop_process(self.watcher, signal.SIGTERM, 10)
        self.watcher = None

    def cleanup(self):
        self.stop_sampler.set()
        for proc in (self.client, self.pr, self.watcher, self.hsmsim):
            if proc is not None and proc.poll() is None:
                stop_process(proc, signal.SIGKILL, 10)


# ---- the report -----------------------------------------------------------------------

def build_report(soak, args, started_wall, duration_s, broke):
    t0 = soak.t0
    an = Analysis(soak.facts, t0)
    grace_ns = args.grace_ms * 1_000_000
    classes = collections.Counter()
    causes = collections.Counter()
    codes = collections.Counter()
    for e in soak.errors:
        cls, why, module = an.classify(e, grace_ns)
        e["class"], e["why"] = cls, why
        classes[cls] += 1
        codes[ckr_name(e["rv"])] += 1
        if cls == "expected":
            causes[why] += 1
    # incidents
    incidents = []
    for e in sorted(soak.errors + [dict(b, **{"class": "bad", "why": "bad signature"})
                                   for b in soak.bad], key=lambda e: e["start"]):
        if incidents and e["start"] - incidents[-1]["last_end"] <= INCIDENT_GAP_NS:
            inc = incidents[-1]
        else:
            inc = {"first_start": e["start"], "last_end": e["end"], "errors": 0,
                   "classes": collections.Counter(), "codes": collections.Counter(),
                   "causes": collections.Counter(), "phase": e["phase"], "first_violation": None}
            incidents.append(inc)
        inc["last_end"] = max(inc["last_end"], e["end"])
        inc["errors"] += 1
        inc["classes"][e["class"]] += 1
        inc["codes"][ckr_name(e["rv"]) if "rv" in e else "bad signature"] += 1
        inc["causes"][e["why"]] += 1
        if e["class"] in ("violation", "bad") and inc["first_violation"] is None:
            inc["first_violation"] = e
    out_incidents = []
    for inc in incidents:
        o = {"phase": inc["phase"], "from_s": round(rel(inc["first_start"], t0), 3),
             "to_s": round(rel(inc["last_end"], t0), 3), "errors": inc["errors"],
             "classes": dict(inc["classes"]), "codes": dict(inc["codes"]),
             "causes": dict(inc["causes"])}
        snap, cause = an.at(inc["first_start"])
        o["fleet_at_first_error"] = snap
        o["driver_around"] = [
            f"{rel(t, t0):.3f} {d['kind']}"
            + (f" {d['module']}" if d.get("module") is not None else "")
            + (f" {d['signal']}" if d.get("signal") else "")
            for t, _, kind, d in an.facts
            if kind == "cmd" and inc["first_start"] - INCIDENT_GAP_NS <= t <= inc["last_end"]]
        v = inc["first_violation"]
        if v is not None:
            snap, _ = an.at(v["start"])
            o["first_violation"] = {
                "start_s": round(rel(v["start"], t0), 3), "end_s": round(rel(v["end"], t0), 3),
                "thread": v["thread"], "key": v["key"], "fn": v.get("fn"),
                "code": ckr_name(v["rv"]) if "rv" in v else "bad signature",
                "why": v["why"], "fleet": snap}
            o["history"] = an.history(v["start"])
        out_incidents.append(o)
    refused = sum(1 for e in soak.events if e["kind"] == "preloadrun-start-refused")
    kinds = collections.Counter(e["kind"] for e in soak.events
                                if not e["quiesce"] and e["kind"] != "preloadrun-start-refused")
    quiesce = collections.Counter(e["kind"] for e in soak.events if e["quiesce"])
    signals = collections.defaultdict(collections.Counter)
    failed_cmds = collections.Counter()
    for e in soak.events:
        if "signal" in e:
            signals[e["kind"]][e["signal"]] += 1
        if e.get("status", 0) != 0 and e["kind"] not in ("service-restart", "preloadrun-restart",
                                                         "preloadrun-start-refused"):
            failed_cmds[e["kind"]] += 1
    ok = sum(p.get("ok", 0) for p in soak.phase_results)
    report = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_wall)),
        "duration_s": round(duration_s, 1),
        "settings": {"mode": args.mode, "modules": args.modules, "max_modules": args.max_modules,
                     "events": args.events, "duration": args.duration, "gap_ms": args.gap_ms,
                     "threads": args.threads, "rsa": args.rsa, "seed": args.seed,
                     "kinds": list(args.kinds), "grace_ms": args.grace_ms,
                     "empty_chance": args.empty_chance, "init_delay_ms": args.init_delay_ms},
        "phases": [{k: v for k, v in p.items() if not k.endswith("_ns")} | {
            "events_s": round((p.get("events_end_ns", p["start_ns"]) - p["start_ns"]) / 1e9, 1)}
            for p in soak.phase_results],
        "events": sum(kinds.values()),
        "events_by_kind": dict(sorted(kinds.items())),
        "quiesce_commands": dict(sorted(quiesce.items())),
        "preloadrun_start_refused": refused,
        "restart_signals": {k: dict(v) for k, v in signals.items()},
        "failed_commands": dict(failed_cmds),
        "signatures": {"ok": ok, "bad": len(soak.bad)},
        "errors": {"total": len(soak.errors), "violations": classes["violation"],
                   "grace": classes["grace"], "expected": classes["expected"],
                   "expected_by_cause": dict(causes.most_common()),
                   "by_code": dict(codes.most_common())},
        "error_list": [
            {"phase": e["phase"], "start_s": round(rel(e["start"], t0), 4),
             "end_s": round(rel(e["end"], t0), 4), "thread": e["thread"], "key": e["key"],
             "fn": e["fn"], "code": ckr_name(e["rv"]), "class": e["class"], "why": e["why"]}
            for e in sorted(soak.errors, key=lambda e: e["start"])[:MAX_LISTED_ERRORS]],
        "bad_signatures": [
            {"phase": b["phase"], "start_s": round(rel(b["start"], t0), 4),
             "end_s": round(rel(b["end"], t0), 4), "thread": b["thread"], "key": b["key"],
             "len": b["len"]} for b in soak.bad[:MAX_LISTED_ERRORS]],
        "publications_ignored": an.ignored_publications,
        "incidents": out_incidents,
        "processes": soak.processes,
        "max_fds": dict(soak.max_fds),
        "problems": list(soak.problems) + ([f"the soak broke: {broke}"] if broke else []),
        "work_dir": soak.root,
    }
    passed = (not broke and not soak.bad and classes["violation"] == 0 and not soak.problems
              and ok > 0)
    report["passed"] = passed
    return report


def kib(v):
    return f"{v / 1024:.1f}M" if v is not None else "-"


def print_report(r, out, max_incidents):
    p = lambda *a: print(*a, file=out)  # noqa: E731
    s = r["settings"]
    p(f"soak: mode {s['mode']}, {s['modules']} modules (at most {s['max_modules']}), "
      f"{s['threads']} signing threads{' (EC + RSA)' if s['rsa'] else ' (EC)'}, seed {s['seed']}, "
      f"grace {s['grace_ms']} ms")
    p(f"  started {r['started']}, took {r['duration_s']} s")
    for ph in r["phases"]:
        p(f"  {ph['phase']} phase: {ph.get('events_fired', 0)} events in {ph['events_s']} s; "
          f"settled: {'yes' if ph.get('settled') else 'NO'}"
          + (f", then {ph.get('settle_ok', 0)} signatures and {ph.get('settle_errors', 0)} "
             f"errors" if ph.get("settled") else "")
          + f"; signatures ok {ph.get('ok', 0)}, bad {ph.get('bad', 0)}, errors {ph.get('err', 0)}")
    p(f"events: {r['events']}: " + ", ".join(f"{k} {v}" for k, v in r["events_by_kind"].items()))
    if r["quiesce_commands"]:
        p("  and at the end of the phases: "
          + ", ".join(f"{k} {v}" for k, v in r["quiesce_commands"].items()))
    if r["preloadrun_start_refused"]:
        p(f"  preloadrun refused to start (no usable module) {r['preloadrun_start_refused']} "
          f"time(s), and was started again")
    for k, v in r["restart_signals"].items():
        p(f"  {k}: " + ", ".join(f"{sig} {n}" for sig, n in sorted(v.items())))
    if r["failed_commands"]:
        p("  commands that failed (the fleet changed under them): "
          + ", ".join(f"{k} {v}" for k, v in r["failed_commands"].items()))
    p(f"signatures: ok {r['signatures']['ok']}, bad {r['signatures']['bad']}")
    e = r["errors"]
    p(f"errors seen by the application: {e['total']}")
    p(f"  violations (a module served throughout the call and the grace before): "
      f"{e['violations']}")
    p(f"  grace (a module began serving less than {s['grace_ms']} ms before the call): "
      f"{e['grace']}")
    p(f"  expected (no module served throughout the call): {e['expected']}")
    for cause, n in e["expected_by_cause"].items():
        p(f"    {n:7d}  {cause}")
    if e["by_code"]:
        p("  by code: " + ", ".join(f"{k} {v}" for k, v in e["by_code"].items()))
    incs = r["incidents"]
    p(f"incidents (errors less than {INCIDENT_GAP_NS // 10**9} s apart): {len(incs)}")
    shown = 0
    for inc in incs:
        bad = "first_violation" in inc
        if not bad and shown >= max_incidents:
            continue
        shown += 1
        classes = ", ".join(f"{k} {v}" for k, v in inc["classes"].items())
        codes = ", ".join(f"{k} {v}" for k, v in inc["codes"].items())
        cause = max(inc["causes"].items(), key=lambda kv: kv[1])[0]
        p(f"  {inc['from_s']:9.3f}-{inc['to_s']:.3f} s ({inc['phase']}): {inc['errors']} "
          f"error(s) [{classes}] {codes}; {cause}")
        if inc["driver_around"]:
            around = inc["driver_around"]
            p("      driver, from 1 s before: " + "; ".join(around[:8])
              + (f"; ... ({len(around) - 8} more)" if len(around) > 8 else ""))
        f = inc["fleet_at_first_error"]
        if f:
            p("      fleet at the first error: " + fleet_line(f))
        if bad:
            v = inc["first_violation"]
            p(f"    VIOLATION at {v['start_s']:.3f}-{v['end_s']:.3f} s, thread {v['thread']}, "
              f"{v['key']} key, {v['fn']}: {v['code']}; {v['why']}")
            p("      fleet then: " + fleet_line(v["fleet"]))
            p("      history:")
            for line in inc["history"]:
                p("    " + line)
    if shown < len(incs):
        p(f"  ... and {len(incs) - shown} more incident(s) without violation (--json has all)")
    p("processes (RSS / HWM / threads / descriptors, at the start and the end of each phase):")
    for proc in r["processes"]:
        a, b = proc.get("start"), proc.get("end")

        def fmt(x):
            if not x:
                return "gone"
            return (f"pid {x['pid']}: {kib(x.get('vmrss_kib'))} / {kib(x.get('vmhwm_kib'))} / "
                    f"{x.get('threads', '-')} / {'-' if x.get('fds') is None else x['fds']}")
        n = proc.get("instances", 1)
        p(f"  {proc['role']:10s} {proc['phase']:10s} start {fmt(a)}; end {fmt(b)}"
          + (f" ({n} processes: restarts)" if n > 1 else ""))
    p("  most descriptors seen: " + ", ".join(f"{k} {v}" for k, v in r["max_fds"].items()))
    if r["problems"]:
        p("problems:")
        for x in r["problems"]:
            p(f"  {x}")
    p(f"result: {'PASS' if r['passed'] else 'FAIL'}: {r['signatures']['bad']} bad signature(s), "
      f"{r['errors']['violations']} violation(s), {len(r['problems'])} problem(s)")
    p(f"work directory: {r['work_dir']}{' (removed)' if r.get('removed') else ''}")


def fleet_line(f):
    mods = " ".join(
        f"{n}:{m['state'][:4]}/g{m['generation']}"
        + ("+card" if m["token_at_generation"] == m["generation"] else "")
        + (f"/fail{m['fail_next']}" if m["fail_next"] else "")
        + ("/changing" if m["changing"] else "")
        + ("*" if m["serving"] else "")
        for n, m in f["modules"].items())
    return (f"service {'up' if f['service_up'] else 'DOWN'}, preloadrun "
            f"{f['preloadrun_pid'] or 'DOWN'}, file gen {f['tokens_file_generation']}; "
            f"modules {mods or 'none'} (* serving)")


# ---- main -------------------------------------------------------------------------------

def find_binaries(args):
    build = args.build_dir
    if build is None:
        here = os.path.dirname(os.path.abspath(__file__))
        for preset in ("default", "ci"):
            cand = os.path.join(here, "..", "..", "build", preset)
            if os.path.isdir(cand):
                build = cand
                break
    guesses = {"hsmsim": "src/sim/hsmsim", "preloadrun": "src/supervisor/preloadrun",
               "client": "bench/soak/soak_client",
               "module": "src/pkcs11/libpreloadrun-pkcs11.so"}
    for name, rel_path in guesses.items():
        if getattr(args, name) is None and build is not None:
            setattr(args, name, os.path.normpath(os.path.join(build, rel_path)))
        path = getattr(args, name)
        if path is None or not os.path.isfile(path):
            raise Broke(f"--{name}: not found ({path}); give --build-dir or --{name}")


def main():
    ap = argparse.ArgumentParser(
        prog="soak.py", description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-dir", help="a build tree (default: build/default, else build/ci "
                    "of this checkout); the programs are found in it")
    ap.add_argument("--hsmsim", help="the hsmsim binary (default: in --build-dir)")
    ap.add_argument("--preloadrun", help="the preloadrun binary (default: in --build-dir)")
    ap.add_argument("--client", help="soak_client (default: in --build-dir)")
    ap.add_argument("--module", help="libpreloadrun-pkcs11.so (default: in --build-dir)")
    ap.add_argument("--mode", choices=("both", "supervised", "service"), default="both",
                    help="how preloadrun runs (default: both, one phase each)")
    ap.add_argument("--modules", type=int, default=4, help="modules at the start (1-32; "
                    "default 4)")
    ap.add_argument("--max-modules", type=int, default=None,
                    help="at most this many modules enrolled, `add` included (default: "
                    "modules + 4; at most 32, what preloadrun tracks)")
    ap.add_argument("--events", type=int, default=300,
                    help="events to fire (default 300; 0: as many as --duration allows)")
    ap.add_argument("--duration", type=float, default=None,
                    help="stop firing after this many seconds, even with events left")
    ap.add_argument("--gap-ms", type=float, default=150,
                    help="mean gap between events (exponential, at most 4x; default 150)")
    ap.add_argument("--threads", type=int, default=4, help="signing threads (default 4)")
    ap.add_argument("--rsa", action="store_true",
                    help="every 10th signature with an RSA-2048 key as well as EC P-256")
    ap.add_argument("--seed", type=int, default=None, help="seed of the random draws "
                    "(default: random, printed); the events they make also depend on the "
                    "state of the fleet, hence on timing")
    ap.add_argument("--kinds", default=",".join(ALL_KINDS),
                    help="event kinds, comma-separated (default: all: %(default)s)")
    ap.add_argument("--no-service-restarts", action="store_true",
                    help="leave service-restart out of --kinds")
    ap.add_argument("--no-preloadrun-restarts", action="store_true",
                    help="leave preloadrun-restart out of --kinds")
    ap.add_argument("--empty-chance", type=float, default=0.15,
                    help="probability of failing or removing the last module up (default 0.15)")
    ap.add_argument("--grace-ms", type=int, default=100,
                    help="how long after a module begins serving an error still counts as "
                    "grace, not violation (default 100)")
    ap.add_argument("--init-delay-ms", type=int, default=50,
                    help="hsmsim's initialisation delay (default 50)")
    ap.add_argument("--poll-ms", type=int, default=50,
                    help="how often the observer lists the modules (default 50)")
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds of error-free signing required at the end of a phase "
                    "(default 2)")
    ap.add_argument("--settle-timeout", type=float, default=30.0,
                    help="how long the fleet may take to be whole again (default 30 s)")
    ap.add_argument("--module-log-level", default="info",
                    help="PRELOADRUN_PKCS11_LOG_LEVEL of the application (default info)")
    ap.add_argument("--max-incidents", type=int, default=30,
                    help="incidents without violation shown in the text report (default 30)")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--report", help="also write the JSON report to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="say what it does on stderr")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in ALL_KINDS]
    if unknown:
        ap.error(f"--kinds: unknown {','.join(unknown)} (known: {','.join(ALL_KINDS)})")
    if args.no_service_restarts:
        kinds = [k for k in kinds if k != "service-restart"]
    if args.no_preloadrun_restarts:
        kinds = [k for k in kinds if k != "preloadrun-restart"]
    args.kinds = kinds
    if args.max_modules is None:
        args.max_modules = min(32, args.modules + 4)
    if not 1 <= args.modules <= 32 or not args.modules <= args.max_modules <= 32:
        ap.error("--modules 1..32, --max-modules between --modules and 32")
    if args.events < 0 or args.threads < 1 or args.gap_ms < 0 or args.grace_ms < 0:
        ap.error("--events >= 0, --threads >= 1, --gap-ms >= 0, --grace-ms >= 0")
    if args.events == 0 and not args.duration:
        ap.error("--events 0 needs --duration")
    if not kinds:
        ap.error("no event kind left")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 2**31)
    try:
        find_binaries(args)
    except Broke as e:
        print(f"soak: {e}", file=sys.stderr)
        return 3

    root = tempfile.mkdtemp(prefix="soak", dir="/tmp")   # short: sun_path holds 108 bytes
    started = time.time()
    soak = Soak(args, root)
    broke = None
    died = None

    def on_term(*_):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, on_term)
    try:
        soak.run()
    except Died as e:
        died = str(e)
    except Broke as e:
        broke = str(e)
    except KeyboardInterrupt:
        broke = "interrupted"
    finally:
        soak.cleanup()
        signal.signal(signal.SIGTERM, old_term)
    if died:
        soak.problems.append(died)
    report = build_report(soak, args, started, time.time() - started, broke)
    with open(os.path.join(root, "facts.jsonl"), "w") as f:
        for t, _, kind, data in sorted(soak.facts, key=lambda x: (x[0], x[1])):
            f.write(json.dumps({"t_s": round(rel(t, soak.t0), 6), "kind": kind, "data": data})
                    + "\n")
    remove = report["passed"] and not args.keep
    report["removed"] = remove
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1, default=str)
    if remove:
        shutil.rmtree(root, ignore_errors=True)
    try:
        if args.json:
            json.dump(report, sys.stdout, indent=1, default=str)
            print()
        else:
            print_report(report, sys.stdout, args.max_incidents)
        sys.stdout.flush()
    except BrokenPipeError:
        # read by `head` or the like: the status still tells
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if broke:
        print(f"soak: {broke}", file=sys.stderr)
        return 3
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
