"""Helpers for the end-to-end tests of preloadrun (tests/e2e/test_preloadrun.py).

They drive the real `preloadrun` (env PRELOADRUN) against a real `hsmsim
serve` started by conftest.py's `make_service`, with the probe program (env
PROBE, tests/support/probe.cpp) as a child that reports what it sees and
counts the signals it receives.

Everything a test creates lives under its Sim's private root (/tmp/hsXXXX,
mode 0700): the tokens files (-f ROOT/t/tokens.json), XDG_RUNTIME_DIR, the
passphrase files, the probe's reports.
"""

import json
import os
import re
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from probe_files import read_counts, read_report  # noqa: E402,F401 (re-exported to the tests)
from procs import (children_of, env_with, executable, proc_status,  # noqa: E402,F401 (re-exported)
                   wait_for)

TIMEOUT = 15.0
PASS1 = "correct horse 1"        # passphrases: distinctive, easy to grep for
PASS2 = "battery staple 2"
PY = sys.executable or "/usr/bin/python3"

# A log line: "preloadrun[PID]: LEVEL: message" (with or without colour).
# The one error line of a failure is "preloadrun: message".
_LOG_RE = re.compile(r"^(\x1b\[[0-9;]*m)*preloadrun\[\d+\]: ")


def error_lines(stderr):
    """The lines of stderr that are not log lines."""
    return [l for l in stderr.splitlines() if l.strip() and not _LOG_RE.search(l)]


def dir_entries(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def default_dispositions():
    """Every signal Python may set back to its default disposition."""
    for signo in range(1, signal.NSIG):
        try:
            signal.signal(signo, signal.SIG_DFL)
        except (OSError, ValueError):
            pass  # KILL, STOP, and glibc's own 32 and 33


class Runner:
    """preloadrun against one Sim. `tokdir` is a private directory (0700) for
    tokens files; `xdg` is the XDG_RUNTIME_DIR given to preloadrun."""

    def __init__(self, binary, probe, sim):
        self.bin = binary
        self.probe = probe
        self.sim = sim
        self.root = sim.root
        self.tokdir = os.path.join(sim.root, "t")
        os.mkdir(self.tokdir, 0o700)
        self.xdg = os.path.join(sim.root, "x")
        os.mkdir(self.xdg, 0o700)
        self.procs = []
        self.pids = []             # other processes to kill at the end
        self._n = 0

    # -- paths -----------------------------------------------------------------
    def path(self, name):
        return os.path.join(self.root, name)

    def tokens_file(self, name="tokens.json"):
        return os.path.join(self.tokdir, name)

    def fresh(self, prefix="f"):
        self._n += 1
        return self.path(f"{prefix}{self._n}")

    # -- environment -----------------------------------------------------------
    @property
    def env(self):
        return env_with(self.sim.env, XDG_RUNTIME_DIR=self.xdg, NFAST_NFKM_TOKENSFILE=None,
                        CKNFAST_RELOAD_KEYS=None, CKNFAST_LOADSHARING=None, NOTIFY_SOCKET=None,
                        NO_COLOR="1")

    def argv(self, *args):
        return [self.bin, *map(str, args)]

    # -- running ---------------------------------------------------------------
    def run(self, *args, env=None, input=None, pass_fds=(), timeout=TIMEOUT, stdin=None):
        kw = {}
        if input is None and stdin is None:
            kw["stdin"] = subprocess.DEVNULL
        elif stdin is not None:
            kw["stdin"] = stdin
        return subprocess.run(self.argv(*args), input=input, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout,
                              pass_fds=pass_fds, **kw)

    def start(self, *args, env=None, pass_fds=(), stdout=subprocess.PIPE,
              stderr=None, stdin=subprocess.DEVNULL, preexec_fn=None):
        """Popen of preloadrun ARGS; stderr goes to a log file (self.stderr_of(p)).
        preexec_fn runs in the new process before preloadrun is executed;
        by default it makes every disposition the default, so that what the
        child gets does not depend on how the test run was started (signals
        ignored by its caller stay ignored for preloadrun's child)."""
        log_path = self.fresh("stderr")
        log = open(log_path, "wb")
        p = subprocess.Popen(self.argv(*args), env=env or self.env, stdin=stdin,
                             stdout=stdout, stderr=stderr or log, pass_fds=pass_fds,
                             start_new_session=True,
                             preexec_fn=preexec_fn or default_dispositions)
        log.close()
        p.stderr_path = log_path
        self.procs.append(p)
        return p

    @staticmethod
    def stderr_of(p):
        with open(p.stderr_path, errors="replace") as f:
            return f.read()

    def cleanup(self):
        """Kills what is still running: every preloadrun started here, its
        children (they run in their own process groups), and self.pids."""
        for p in self.procs:
            if p.poll() is None:
                self.pids.extend(pid for pid, _ in children_of(p.pid))
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
            if p.stdout:
                p.stdout.close()

    # -- the world -------------------------------------------------------------
    def softcard(self, name, passphrase):
        return self.sim.create_token(name, passphrase)

    def module_objects(self):
        """{module number: objects} from `hsmsim module list --json`."""
        return {m["number"]: m.get("objects") for m in self.sim.json("module", "list")}

    # -- the tokens file -------------------------------------------------------
    @staticmethod
    def load(path):
        with open(path) as f:
            return json.load(f)

    def check(self, *args, env=None):
        return self.run("check", *args, env=env)


def assert_one_error_line(r, *needles):
    """preloadrun failed by itself: exit 125 and exactly one error line on
    stderr (log lines aside), containing every needle (case-insensitive)."""
    assert r.returncode == 125, (f"expected exit 125, got {r.returncode}\n"
                                 f"stdout: {r.stdout!r}\nstderr: {r.stderr!r}")
    lines = error_lines(r.stderr)
    assert len(lines) == 1, f"expected exactly one error line on stderr, got {r.stderr!r}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), \
            f"error line {lines[0]!r} does not mention {needle!r}"
    assert r.stdout == "", f"nothing on stdout expected, got {r.stdout!r}"
    return lines[0]
