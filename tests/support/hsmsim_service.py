"""`hsmsim serve` for the Python tests: a world directory, the service on it
and the CLI pointed at both (class Sim), the one way the tests start it.

Sim.start() runs `hsmsim serve`, waits for its ready line (the service
answers from then on), checks that line against the contract (READY_RE)
and keeps what serve writes on stderr in a log file; Sim.stop() ends it
with a signal and, with check, asserts that it exits 0 and removes both
socket files. What differs between the suites is a parameter: the paths,
the environment under the service's variables, an argv prefix that runs
serve and the CLI as another user (procs.run_as_argv), the directory they
run in.
"""

import json
import os
import re
import signal
import subprocess
import threading

import pytest

from procs import env_with, read_first_line_and_rest, wait_for

READY_RE = re.compile(
    r"^hsmsim: ready: (?P<modules>\d+) modules, world (?P<world>[0-9a-f]+), "
    r"socket (?P<socket>\S+), admin socket (?P<admin>\S+)$"
)
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
# The variables that point hsmsim (and the PKCS#11 module) at a world and a
# service, and the one that would make serve notify systemd.
SERVICE_VARS = ("NFAST_KMDATA", "HSMSIM_SOCKET", "HSMSIM_ADMIN_SOCKET")


def base_env():
    """This process's environment without the service's variables and
    NOTIFY_SOCKET, with LC_ALL=C."""
    return env_with(os.environ, **dict.fromkeys(SERVICE_VARS + ("NOTIFY_SOCKET",)), LC_ALL="C")


class Sim:
    """One hsmsim world directory and (at most) one `hsmsim serve` on it.

    Everything is under `root` unless given: the world (`kmdata`, default
    ROOT/km, made empty with mode 0700 so that serve creates the world in
    it; a given one is used as it is), the client and admin sockets (ROOT/c.sock,
    ROOT/a.sock: short, sun_path holds 108 bytes), serve's stderr (ROOT/serve.log)
    and the passphrase files of passfile(). `env_base` is the environment
    under the three variables that name them (default: base_env()); `run_as`
    an argv prefix for serve and the CLI; `cwd` where they run.
    """

    def __init__(self, binary, root, kmdata=None, socket=None, admin_socket=None,
                 log_path=None, env_base=None, run_as=(), cwd=None):
        self.bin = binary
        self.root = root
        if kmdata is None:
            kmdata = os.path.join(root, "km")
            os.mkdir(kmdata, 0o700)
        self.kmdata = kmdata
        self.socket = socket or os.path.join(root, "c.sock")
        self.admin_socket = admin_socket or os.path.join(root, "a.sock")
        self.log_path = log_path or os.path.join(root, "serve.log")
        self.env_base = dict(env_base) if env_base is not None else base_env()
        self.run_as = list(run_as)
        self.cwd = cwd
        self.proc = None
        self.ready = None          # re.Match of the ready line
        self.stdout_lines = []     # what serve printed on stdout
        self._drain = None
        self._counter = 0

    # -- environment for the CLI and the service ------------------------------
    @property
    def service_vars(self):
        """{NFAST_KMDATA, HSMSIM_SOCKET, HSMSIM_ADMIN_SOCKET} of this world."""
        return dict(zip(SERVICE_VARS, (self.kmdata, self.socket, self.admin_socket)))

    @property
    def env(self):
        """A fresh copy of the environment of serve and the CLI."""
        return {**self.env_base, **self.service_vars}

    @property
    def world_id(self):
        return self.ready.group("world") if self.ready else None

    # -- the service -----------------------------------------------------------
    def serve_args(self, modules=2, init_delay_ms=100, op_latency_ms=None, extra=()):
        args = [*self.run_as, self.bin, "serve"]
        if modules is not None:
            args += ["--modules", str(modules)]
        if init_delay_ms is not None:
            args += ["--init-delay-ms", str(init_delay_ms)]
        if op_latency_ms is not None:
            args += ["--op-latency-ms", str(op_latency_ms)]
        return args + [str(a) for a in extra]

    def start(self, modules=2, init_delay_ms=100, op_latency_ms=None, extra=(), env=None,
              expect_ready=True, timeout=READY_TIMEOUT):
        """Starts serve; waits for the ready line (or, with expect_ready=False,
        returns the Popen without waiting)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.stdout_lines = []
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.serve_args(modules, init_delay_ms, op_latency_ms, extra),
                env=env if env is not None else self.env, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log)
        if not expect_ready:
            return self.proc
        line = self._read_line(timeout)
        if line is None:
            rc = self.proc.poll()
            self.kill()
            pytest.fail(f"{' '.join(self.run_as)} hsmsim serve printed no ready line within "
                        f"{timeout}s (exit status {rc}); stdout {self.stdout_lines!r}; "
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
        """Stops serve with `sig` (killed after STOP_TIMEOUT); with check,
        asserts the contract: exit 0 within STOP_TIMEOUT and both socket
        files removed. Returns the status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            if check:
                pytest.fail(f"hsmsim serve did not exit within {STOP_TIMEOUT}s of {sig!r}")
            rc = self.proc.returncode
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
        return subprocess.run([*self.run_as, self.bin, *map(str, args)], input=input,
                              env=env if env is not None else self.env, cwd=self.cwd,
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

    def wait_module(self, number, state, timeout=5.0):
        """Polls `module list` until module `number` is in `state`; returns it."""
        def reached():
            m = self.modules().get(number)
            return m if m is not None and m["state"] == state else None
        return wait_for(reached, timeout, what=lambda: f"module {number} to be {state}: "
                                                       f"{self.modules().get(number)}")

    # -- the world -------------------------------------------------------------
    def passfile(self, content):
        """A passphrase file (mode 0600) holding exactly `content`."""
        self._counter += 1
        path = os.path.join(self.root, f"pass{self._counter}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return path

    def create_token(self, name, passphrase, kind="softcard"):
        """`hsmsim KIND create NAME` (a softcard or a cardset) with
        `passphrase`; returns the passphrase file it was read from."""
        path = self.passfile(passphrase)
        self.ok(kind, "create", name, "--passphrase-file", path)
        return path
