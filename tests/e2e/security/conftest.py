"""Fixtures for the attacker tests: several local users on one machine.

The tests here act as other local users, as the people who run preloadrun
next to others on a shared machine must expect:

  VICTIM    uid 2000  runs preloadrun and PKCS#11 applications
  ATTACKER  uid 2001  another local user, the adversary
  SERVICE   uid 2100  runs `hsmsim serve`; its client socket is mode 0660,
                      group SERVICE, as the packaged hsmsim.service does with
                      the hsmsim group (VICTIM and ATTACKER are members)

The test process itself is root and starts the others through setpriv(1):
these tests need root (CI runs as root) and are skipped otherwise, saying so.
None of these uids needs an entry in /etc/passwd.

Everything lives under one directory per test, /tmp/secXXXX (mode 0755,
owned by root), with one home directory per user in it (mode 0700, owned by
that user), kept when the test fails.
"""

import json
import os
import queue
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "support"))
sys.path.insert(0, os.path.join(HERE, ".."))
from hsmsim_service import Sim  # noqa: E402
from outcome import pytest_runtest_makereport, scratch_dir  # noqa: E402,F401 (a hook)
from procs import env_with, executable, run_as_argv  # noqa: E402

VICTIM = 2000
ATTACKER = 2001
SERVICE = 2100
PY = "/usr/bin/python3"
TIMEOUT = 30


@pytest.fixture(autouse=True)
def _require_root():
    if os.geteuid() != 0:
        pytest.skip("the attacker tests start processes as other uids: run them as root")


def as_user(uid, groups=(SERVICE,)):
    """argv prefix that runs a command as `uid` (gid `uid`, the given
    supplementary groups), with no capabilities left."""
    return run_as_argv(uid, uid, groups)


def base_env():
    """The environment of a fresh login without a session manager: no
    XDG_RUNTIME_DIR, no HSMSIM_* or preloadrun variables."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C"}
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS", "LSAN_OPTIONS",
                "LD_PRELOAD"):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


class World:
    """The machine as one test sees it: a root directory, a home per user,
    and (once started) hsmsim serving as SERVICE."""

    def __init__(self, root):
        self.root = root
        self.hsmsim = executable("HSMSIM")
        self.preloadrun = executable("PRELOADRUN")
        self.homes = {}
        self.sim = None            # the shared service once started
        self.service = None        # its process
        self._procs = []

    # -- users ---------------------------------------------------------------
    def home(self, uid):
        """The private home directory of `uid` (created on first use)."""
        if uid not in self.homes:
            path = os.path.join(self.root, f"home-{uid}")
            os.mkdir(path, 0o700)
            os.chown(path, uid, uid)
            self.homes[uid] = path
        return self.homes[uid]

    def env(self, uid, **extra):
        """The environment of `uid`: HOME its home, nothing else set up;
        pointed at the shared service when it runs. Values of None unset."""
        env = base_env()
        env["HOME"] = self.home(uid)
        if self.service is not None:
            env["HSMSIM_SOCKET"] = self.socket
            env["HSMSIM_SERVICE_USER"] = str(SERVICE)
        return env_with(env, **extra)

    def file_for(self, uid, name, content, mode=0o600):
        """A file in `uid`'s home, owned by it."""
        path = os.path.join(self.home(uid), name)
        with open(path, "w") as f:
            f.write(content)
        os.chmod(path, mode)
        os.chown(path, uid, uid)
        return path

    def run(self, uid, argv, env=None, input=None, timeout=TIMEOUT, groups=(SERVICE,)):
        """Runs argv as `uid` in its home; a CompletedProcess with text output."""
        return subprocess.run(as_user(uid, groups) + [str(a) for a in argv],
                              env=env if env is not None else self.env(uid),
                              cwd=self.home(uid), input=input, capture_output=True,
                              text=True, timeout=timeout)

    def spawn(self, uid, argv, env=None, groups=(SERVICE,), **kw):
        """Starts argv as `uid`; killed at the end of the test."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(as_user(uid, groups) + [str(a) for a in argv],
                                env=env if env is not None else self.env(uid),
                                cwd=self.home(uid), **kw)
        self._procs.append(proc)
        return proc

    # -- the shared service --------------------------------------------------
    def start_service(self, modules=2, extra=()):
        """`hsmsim serve` as SERVICE: world, client socket (0660, group
        SERVICE) and admin socket in ROOT/srv (0755, owned by SERVICE)."""
        srv = os.path.join(self.root, "srv")
        os.mkdir(srv, 0o755)
        os.chown(srv, SERVICE, SERVICE)
        self.sim = Sim(self.hsmsim, self.root, kmdata=os.path.join(srv, "kmdata"),
                       socket=os.path.join(srv, "client.sock"),
                       admin_socket=os.path.join(srv, "admin.sock"),
                       env_base=dict(base_env(), HOME=self.root),
                       run_as=as_user(SERVICE, groups=()), cwd=self.home(SERVICE))
        self.service = self.sim.start(modules=modules, init_delay_ms=0, extra=extra, timeout=15)
        return self.service

    @property
    def kmdata(self):
        return self.sim.kmdata

    @property
    def socket(self):
        return self.sim.socket

    @property
    def admin_socket(self):
        return self.sim.admin_socket

    def service_env(self):
        return self.sim.env

    def admin(self, *args, input=None):
        """`hsmsim ARGS` as SERVICE (admin commands, world set-up); must succeed."""
        return self.sim.ok(*args, input=input, timeout=TIMEOUT)

    def read_service_log(self):
        return self.sim.log()

    def cleanup(self):
        if self.sim is not None:
            self.sim.kill()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def machine(request):
    """A World for this test; everything it started is killed at the end."""
    with scratch_dir(request, "sec", dir="/tmp", mode=0o755) as root:
        world = World(root)
        yield world
        world.cleanup()


@pytest.fixture
def shared(machine):
    """`machine` with hsmsim serving as SERVICE (2 modules)."""
    machine.start_service()
    return machine


class Actor:
    """A program running as `uid` that says JSON lines, or plain ones."""

    def __init__(self, machine, uid, argv, env=None, json_lines=True):
        self.what = f"uid {uid}: {' '.join(map(str, argv))}"
        self.json_lines = json_lines
        self.proc = machine.spawn(uid, argv, env=env, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def next(self, timeout=60):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"{self.what}: nothing said in {timeout} s")
        if line is None:
            self.proc.wait(10)
            pytest.fail(f"{self.what}: exited {self.proc.returncode}\n{self.proc.stderr.read()}")
        return json.loads(line) if self.json_lines else line.strip()

    def tell(self, text="go\n"):
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def ask(self, text="status\n"):
        self.tell(text)
        return self.next()

    def close(self):
        """Closes its stdin: the end of what it does until then."""
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def finish(self):
        """Closes its stdin; waits for it to exit (0)."""
        self.close()
        assert self.proc.wait(60) == 0, f"{self.what}: {self.proc.stderr.read()}"
