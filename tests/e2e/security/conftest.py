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
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "support"))
sys.path.insert(0, os.path.join(HERE, ".."))
from procs import executable, read_first_line, run_as_argv  # noqa: E402

VICTIM = 2000
ATTACKER = 2001
SERVICE = 2100
PY = "/usr/bin/python3"
TIMEOUT = 30


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


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
        self.service = None
        self.service_log = os.path.join(root, "serve.log")
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
        for name, value in extra.items():
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
        return env

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
        self.kmdata = os.path.join(srv, "kmdata")
        self.socket = os.path.join(srv, "client.sock")
        self.admin_socket = os.path.join(srv, "admin.sock")
        env = self.service_env()
        log = open(self.service_log, "ab")
        self.service = self.spawn(
            SERVICE, [self.hsmsim, "serve", "--modules", str(modules), "--init-delay-ms", "0",
                      *extra],
            env=env, groups=(), stdout=subprocess.PIPE, stderr=log)
        log.close()
        line = read_first_line(self.service, 15)
        if line is None or not line.startswith("hsmsim: ready"):
            pytest.fail(f"hsmsim serve as uid {SERVICE} did not start: {line!r}\n"
                        f"{self.read_service_log()}")
        return self.service

    def service_env(self):
        env = base_env()
        env.update(HOME=self.root, NFAST_KMDATA=self.kmdata, HSMSIM_SOCKET=self.socket,
                   HSMSIM_ADMIN_SOCKET=self.admin_socket)
        return env

    def admin(self, *args, input=None):
        """`hsmsim ARGS` as SERVICE (admin commands, world set-up); must succeed."""
        r = self.run(SERVICE, [self.hsmsim, *args], env=self.service_env(), input=input,
                     groups=())
        assert r.returncode == 0, f"hsmsim {args} as the service user: {r.returncode}\n{r.stderr}"
        return r

    def read_service_log(self):
        try:
            with open(self.service_log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def cleanup(self):
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def machine(request):
    """A World for this test; everything it started is killed at the end."""
    root = tempfile.mkdtemp(prefix="sec", dir="/tmp")
    os.chmod(root, 0o755)
    world = World(root)
    yield world
    world.cleanup()
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        print(f"keeping {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


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
