"""Helpers for test_ha.py: preloadrun's high-availability loop against a real
`hsmsim serve`, with a child that runs throughout.

The child (CHILD_SCRIPT) writes to a log file, one line each:
  env <NAME> <value|->      at start, for the variables of interest
  hb <monotonic ns>         every HEARTBEAT_S (20 ms)
  sig <number>              for every signal it receives
and exits 0 as soon as a file named "stop" appears next to its log. So a test
proves that the child never saw a signal (no "sig" line) and was never paused
(no gap between heartbeats longer than MAX_PAUSE_S), and ends the run without
sending anything to anybody.

`preloadrun_factory` (a fixture; import it into the test module) starts
`preloadrun ... -- python3 child.py DIR` against a Sim of conftest.py and
stops every run at the end of the test (child told to stop; preloadrun must
exit 0 and remove its tokens file).
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from outcome import failed  # noqa: E402
from procs import env_with, executable, wait_for  # noqa: E402

HEARTBEAT_S = 0.02
MAX_PAUSE_S = 0.2
WAIT_S = 8.0          # how long a test waits for something that should be quick
STOP_TIMEOUT_S = 15.0

CHILD_SCRIPT = r'''
import os, signal, sys, time
d = sys.argv[1]
fd = os.open(os.path.join(d, "child.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
def out(line):
    os.write(fd, (line + "\n").encode())
def on_signal(signo, frame):
    out("sig %d" % signo)
for signo in range(1, signal.NSIG):
    if signo in (signal.SIGKILL, signal.SIGSTOP):
        continue
    try:
        signal.signal(signo, on_signal)
    except (OSError, ValueError, RuntimeError):
        pass
for name in ("NFAST_NFKM_TOKENSFILE", "CKNFAST_RELOAD_KEYS", "CKNFAST_LOADSHARING"):
    out("env %s %s" % (name, os.environ.get(name, "-")))
out("started %d" % os.getpid())
stop = os.path.join(d, "stop")
while not os.path.exists(stop):
    out("hb %d" % time.monotonic_ns())
    time.sleep(%(hb)s)
out("hb %d" % time.monotonic_ns())
out("exit")
'''.replace("%(hb)s", repr(HEARTBEAT_S))


def handles(doc, module):
    """{token name: (handle, module_generation)} of the tokens loaded on `module`."""
    out = {}
    for token in doc["tokens"]:
        for entry in token["loaded"]:
            if entry["module"] == module:
                out[token["name"]] = (entry["handle"], entry["module_generation"])
    return out


def module_entry(doc, number):
    for m in doc["modules"]:
        if m["number"] == number:
            return m
    return None


def loaded_everywhere_at(doc, module, generation):
    """Every token of `doc` is loaded on `module` with module_generation
    `generation`, and the module is listed usable at that generation."""
    m = module_entry(doc, module)
    if m is None or m["state"] != "usable" or m["generation"] != generation:
        return False
    h = handles(doc, module)
    return (len(h) == len(doc["tokens"])
            and all(gen == generation and handle != 0 for handle, gen in h.values()))


def absent_from_tokens(doc, module):
    return all(e["module"] != module for t in doc["tokens"] for e in t["loaded"])


class Run:
    """One preloadrun supervising the heartbeat child, against `sim`."""

    def __init__(self, binary, sim, tokens=(), passfile=None, extra=(), env_extra=None,
                 name="run"):
        self.sim = sim
        self.dir = os.path.join(sim.root, name)
        os.mkdir(self.dir, 0o700)
        self.tokens_file = os.path.join(self.dir, "tokens.json")
        self.child_log = os.path.join(self.dir, "child.log")
        self.stderr_path = os.path.join(self.dir, "preloadrun.stderr")
        script = os.path.join(self.dir, "child.py")
        with open(script, "w") as f:
            f.write(CHILD_SCRIPT)
        args = [binary]
        for t in tokens:
            args += ["-s", t]
        if passfile is not None:
            args += ["--passphrase-file", passfile]
        args += ["-f", self.tokens_file, "--socket", sim.socket, *extra,
                 "--", sys.executable, script, self.dir]
        self.args = args
        env = env_with(sim.env, **{"NFAST_NFKM_TOKENSFILE": None, "CKNFAST_RELOAD_KEYS": None,
                                   "CKNFAST_LOADSHARING": None, "NO_COLOR": "1",
                                   **(env_extra or {})})
        self.err = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        self.status = None

    # -- preloadrun ------------------------------------------------------------
    def stderr(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stderr_lines(self):
        return self.stderr().splitlines()

    def alive(self):
        return self.proc.poll() is None

    def describe(self):
        return (f"preloadrun {' '.join(self.args)}\n--- stderr ---\n{self.stderr()}"
                f"--- tokens file ---\n{json.dumps(self.doc(), indent=1)}")

    def doc(self):
        """The tokens file as published now (None when missing or unreadable)."""
        try:
            with open(self.tokens_file, "rb") as f:
                return json.loads(f.read())
        except (OSError, ValueError):
            return None

    def wait_doc(self, what, predicate, timeout=WAIT_S):
        """Waits until the tokens file satisfies predicate(doc); returns the doc."""
        def check():
            if not self.alive():
                pytest.fail(f"preloadrun exited {self.proc.returncode} while waiting for "
                            f"{what}\n{self.describe()}")
            d = self.doc()
            return d if d is not None and predicate(d) else None
        return wait_for(check, timeout, what=lambda: f"{what}\n{self.describe()}")

    def wait_started(self, timeout=WAIT_S):
        """The child is running and the file published; returns the doc."""
        wait_for(lambda: self._child_started() or self._died(), timeout,
                 what=lambda: f"the child to start\n{self.describe()}")
        return self.wait_doc("the tokens file", lambda d: True, timeout)

    def _child_started(self):
        return any(line.startswith("started ") for line in self.child_lines())

    def _died(self):
        if not self.alive():
            pytest.fail(f"preloadrun exited {self.proc.returncode} before its child "
                        f"started\n{self.describe()}")
        return False

    # -- the child -------------------------------------------------------------
    def child_lines(self):
        try:
            with open(self.child_log, "rb") as f:
                return f.read().decode(errors="replace").splitlines()
        except OSError:
            return []

    def child_env(self):
        env = {}
        for line in self.child_lines():
            parts = line.split(" ", 2)
            if parts[0] == "env" and len(parts) == 3:
                env[parts[1]] = None if parts[2] == "-" else parts[2]
        return env

    def child_signals(self):
        return [int(line.split()[1]) for line in self.child_lines() if line.startswith("sig ")]

    def child_max_pause(self):
        """The longest gap between two heartbeats, in seconds, and when."""
        beats = [int(line.split()[1]) for line in self.child_lines() if line.startswith("hb ")]
        if len(beats) < 2:
            return 0.0, 0
        gap, at = max((b - a, a) for a, b in zip(beats, beats[1:]))
        return gap / 1e9, len(beats)

    def assert_child_undisturbed(self):
        """No signal seen, no pause longer than MAX_PAUSE_S, still running."""
        sigs = self.child_signals()
        assert not sigs, (f"the child received signals "
                          f"{[signal.Signals(s).name for s in sigs]}\n{self.describe()}")
        gap, beats = self.child_max_pause()
        assert beats >= 2, f"the child wrote {beats} heartbeats\n{self.describe()}"
        assert gap <= MAX_PAUSE_S, (f"the child was paused for {gap * 1000:.0f} ms "
                                    f"(> {MAX_PAUSE_S * 1000:.0f} ms)\n{self.describe()}")
        assert "exit" not in self.child_lines(), "the child exited early"
        assert self.alive(), f"preloadrun exited {self.proc.returncode}\n{self.describe()}"

    # -- the end ---------------------------------------------------------------
    def stop(self, check=True):
        """Tells the child to exit 0; preloadrun must then exit 0 and remove
        its tokens file. Returns preloadrun's status."""
        if self.status is not None:
            return self.status
        open(os.path.join(self.dir, "stop"), "w").close()
        try:
            self.status = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.status = self.proc.wait()
            if check:
                pytest.fail(f"preloadrun did not exit within {STOP_TIMEOUT_S}s of its child "
                            f"exiting\n{self.describe()}")
        finally:
            self.err.close()
        if check:
            assert self.status == 0, (f"preloadrun exited {self.status} after its child "
                                      f"exited 0\n{self.describe()}")
            assert not os.path.exists(self.tokens_file), "tokens file left behind"
        return self.status

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        # the child is in its own process group: do not leave it behind
        open(os.path.join(self.dir, "stop"), "w").close()
        if not self.err.closed:
            self.err.close()


def log_lines(run, level=None, pattern=None):
    """preloadrun's stderr lines at `level` (e.g. "error") matching `pattern`."""
    out = []
    for line in run.stderr_lines():
        if level is not None and not re.search(rf"(^|[\s\]]){level}:", line):
            continue
        if pattern is not None and not re.search(pattern, line):
            continue
        out.append(line)
    return out


@pytest.fixture
def preloadrun_factory(request, make_service):
    # Depends on make_service so that the runs stop before the services do.
    """Factory: preloadrun_factory(sim, tokens=(), passfile=None, extra=(),
    env_extra=None) -> Run. Every run still going at the end is stopped (and
    must stop cleanly when the test passed)."""
    binary = executable("PRELOADRUN")
    runs = []

    def factory(sim, tokens=(), passfile=None, extra=(), env_extra=None):
        run = Run(binary, sim, tokens, passfile, extra, env_extra, name=f"run{len(runs)}")
        runs.append(run)
        return run

    yield factory

    errors = []
    for run in runs:
        if run.status is not None:
            continue
        if failed(request):
            run.kill()
            continue
        try:
            run.stop()
        except BaseException as e:
            errors.append(str(e))
            run.kill()
    if errors:
        pytest.fail("preloadrun teardown: " + "; ".join(errors))


@pytest.fixture
def ha_world(make_service):
    """A 3-module service (50 ms init delay) with one softcard 'card'.
    Returns (sim, passfile)."""
    sim = make_service(modules=3, init_delay_ms=50)
    return sim, sim.create_token("card", "correct horse")
