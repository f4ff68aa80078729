"""Fixtures for the end-to-end tests of hsmsim: they drive the real binary.

`hsmsim_bin` is the binary under test (env HSMSIM, set by ctest).
`make_service(...)` starts `hsmsim serve` in a fresh private directory under
/tmp (short paths: sun_path holds 108 bytes) and returns a Sim once the ready
line has been printed; every Sim still running at the end of the test is
stopped with SIGTERM and must exit 0 and remove both socket files.
`service` is one started Sim with the defaults (2 modules, 100 ms init delay).
"""

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from procs import read_first_line_and_rest  # noqa: E402

READY_RE = re.compile(
    r"^hsmsim: ready: (?P<modules>\d+) modules, world (?P<world>[0-9a-f]+), "
    r"socket (?P<socket>\S+), admin socket (?P<admin>\S+)$"
)
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Lets fixtures know whether the test failed (to keep its directory).
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def hsmsim_bin():
    path = os.environ.get("HSMSIM")
    if not path:
        pytest.fail("HSMSIM is not set: run these tests through ctest "
                    "(or set HSMSIM=/path/to/hsmsim)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"HSMSIM={path} is not an executable file")
    return path


def _base_env():
    env = dict(os.environ)
    for var in ("NFAST_KMDATA", "HSMSIM_SOCKET", "HSMSIM_ADMIN_SOCKET", "NOTIFY_SOCKET"):
        env.pop(var, None)
    env["LC_ALL"] = "C"
    return env


class Sim:
    """One hsmsim world directory and (at most) one `hsmsim serve` on it."""

    def __init__(self, binary, root, kmdata=None):
        self.bin = binary
        self.root = root
        if kmdata is None:
            kmdata = os.path.join(root, "km")
            os.mkdir(kmdata, 0o700)  # empty: serve creates the world in it
        self.kmdata = kmdata
        self.socket = os.path.join(root, "c.sock")
        self.admin_socket = os.path.join(root, "a.sock")
        self.log_path = os.path.join(root, "serve.log")
        self.proc = None
        self.ready = None          # re.Match of the ready line
        self.stdout_lines = []     # what serve printed on stdout
        self._drain = None
        self._counter = 0

    # -- environment for the CLI and the service ------------------------------
    @property
    def env(self):
        env = _base_env()
        env["NFAST_KMDATA"] = self.kmdata
        env["HSMSIM_SOCKET"] = self.socket
        env["HSMSIM_ADMIN_SOCKET"] = self.admin_socket
        return env

    @property
    def world_id(self):
        return self.ready.group("world") if self.ready else None

    # -- the service -----------------------------------------------------------
    def serve_args(self, modules=2, init_delay_ms=100, op_latency_ms=None, extra=()):
        args = [self.bin, "serve"]
        if modules is not None:
            args += ["--modules", str(modules)]
        if init_delay_ms is not None:
            args += ["--init-delay-ms", str(init_delay_ms)]
        if op_latency_ms is not None:
            args += ["--op-latency-ms", str(op_latency_ms)]
        return args + list(extra)

    def start(self, modules=2, init_delay_ms=100, op_latency_ms=None, extra=(), env=None,
              expect_ready=True):
        """Starts serve; waits for the ready line (or, with expect_ready=False,
        returns the Popen without waiting)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stdout_lines = []
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.serve_args(modules, init_delay_ms, op_latency_ms, extra),
            env=env if env is not None else self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        log.close()
        if not expect_ready:
            return self.proc
        line = self._read_line(READY_TIMEOUT)
        if line is None:
            rc = self.proc.poll()
            self.kill()
            pytest.fail(f"hsmsim serve printed no ready line within {READY_TIMEOUT}s "
                        f"(exit status {rc}); stdout {self.stdout_lines!r}; "
                        f"log:\n{self.log()}")
        m = READY_RE.match(line)
        assert m, f"ready line does not match the contract: {line!r}"
        self.ready = m
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        return self.proc

    def _read_line(self, timeout):
        line, rest = read_first_line_and_rest(self.proc, timeout)
        if line is not None:
            self.stdout_lines += [line, *rest]
        return line

    def _drain_stdout(self):
        for raw in self.proc.stdout:
            self.stdout_lines.append(raw.decode(errors="replace").rstrip("\n"))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, check=True):
        """Stops serve with `sig`; with check, asserts the contract: exit 0
        within STOP_TIMEOUT and both socket files removed. Returns the status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"hsmsim serve did not exit within {STOP_TIMEOUT}s of {sig!r}")
        if self._drain:
            self._drain.join(2)
            self._drain = None
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        if check:
            assert rc == 0, f"hsmsim serve exited {rc} on {sig!r}; log:\n{self.log()}"
            assert not os.path.exists(self.socket), "client socket file left behind"
            assert not os.path.exists(self.admin_socket), "admin socket file left behind"
        return rc

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self, since=0):
        """What serve wrote on stderr (from byte offset `since`)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    # -- the CLI ---------------------------------------------------------------
    def run(self, *args, input=None, env=None, timeout=30):
        """Runs `hsmsim ARGS...` with this world's environment."""
        return subprocess.run([self.bin, *map(str, args)], input=input,
                              env=env if env is not None else self.env,
                              capture_output=True, text=True, timeout=timeout)

    def ok(self, *args, **kw):
        r = self.run(*args, **kw)
        assert r.returncode == 0, (f"hsmsim {' '.join(map(str, args))} exited "
                                   f"{r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def json(self, *args):
        r = self.ok(*args, "--json")
        try:
            return json.loads(r.stdout)
        except ValueError:
            pytest.fail(f"hsmsim {' '.join(args)} --json printed no JSON: {r.stdout!r}")

    def modules(self):
        return {m["number"]: m for m in self.json("module", "list")}

    def passfile(self, content):
        """A passphrase file (mode 0600) holding exactly `content`."""
        self._counter += 1
        path = os.path.join(self.root, f"pass{self._counter}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return path

    def wait_module(self, number, state, timeout=5.0):
        """Polls `module list` until module `number` is in `state`."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.modules().get(number)
            if m is not None and m["state"] == state:
                return m
            if time.monotonic() > deadline:
                pytest.fail(f"module {number} not {state} after {timeout}s: {m}")
            time.sleep(0.02)


def snapshot_dir(path, ignore=()):
    """{name: (mode, bytes)} of the files of a directory (None for the bytes of
    what is not a regular file), without the names in `ignore`."""
    out = {}
    for name in sorted(os.listdir(path)):
        if name in ignore:
            continue
        p = os.path.join(path, name)
        st = os.lstat(p)
        data = None
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                data = f.read()
        out[name] = (st.st_mode, data)
    return out


@pytest.fixture
def make_service(hsmsim_bin, request):
    """Factory: make_service(modules=2, init_delay_ms=100, op_latency_ms=None,
    kmdata=None, start=True, extra=()) -> Sim. Each call gets its own
    directory (sockets in it); pass kmdata=other.kmdata to share a world."""
    sims = []
    roots = []

    def factory(modules=2, init_delay_ms=100, op_latency_ms=None, kmdata=None,
                start=True, extra=()):
        root = tempfile.mkdtemp(prefix="hs", dir="/tmp")
        roots.append(root)
        sim = Sim(hsmsim_bin, root, kmdata)
        sims.append(sim)
        if start:
            sim.start(modules=modules, init_delay_ms=init_delay_ms,
                      op_latency_ms=op_latency_ms, extra=extra)
        return sim

    yield factory

    errors = []
    for sim in sims:
        if sim.running():
            try:
                sim.stop()
            except BaseException as e:  # report every service, then fail
                errors.append(f"{sim.root}: {e}")
                sim.kill()
        else:
            sim.kill()
    failed = getattr(request.node, "rep_call", None)
    if (failed is not None and failed.failed) or errors:
        for sim in sims:
            print(f"keeping {sim.root} (serve log: {sim.log_path})")
    else:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    if errors:
        pytest.fail("service teardown: " + "; ".join(errors))


@pytest.fixture
def service(make_service):
    return make_service()


# -- preloadrun (test_preloadrun.py; helpers in preloadrun_support.py) --------

@pytest.fixture(scope="session")
def preloadrun_bin():
    from preloadrun_support import executable
    return executable("PRELOADRUN")


@pytest.fixture(scope="session")
def probe_bin():
    from preloadrun_support import executable
    return executable("PROBE")


@pytest.fixture
def pr(make_service, preloadrun_bin, probe_bin):
    """A preloadrun_support.Runner on a fresh service (2 modules, no init
    delay, no token). Whatever it started is killed at the end."""
    from preloadrun_support import Runner
    runner = Runner(preloadrun_bin, probe_bin, make_service(modules=2, init_delay_ms=0))
    yield runner
    runner.cleanup()


@pytest.fixture
def pr_card(pr):
    """`pr` with softcard c1 (passphrase PASS1); pr.card_pass is its file."""
    from preloadrun_support import PASS1
    pr.card_pass = pr.softcard("c1", PASS1)
    return pr
