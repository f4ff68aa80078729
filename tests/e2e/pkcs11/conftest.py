"""Fixtures for the PKCS#11 module's end-to-end tests.

Reuses the hsmsim fixtures of tests/e2e/conftest.py (make_service, Sim).
`world` is a started service with 3 modules, a softcard "card1" (passphrase
"secret") holding EC key "eck" (CKA_ID 01), and a module-protected RSA key
"modrsa" (CKA_ID 02). `client_env(world, ...)` is the environment of a client
application using the module; the module logs to world.root/p11.log.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

_base_path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "conftest.py")
_spec = importlib.util.spec_from_file_location("e2e_base_conftest", _base_path)
_base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_base)

pytest_runtest_makereport = _base.pytest_runtest_makereport
hsmsim_bin = _base.hsmsim_bin
make_service = _base.make_service

from procs import env_with, wait_for  # noqa: E402,F401 (wait_for: for the tests)

PIN = "secret"

# The first lines of a PyKCS11 scenario (a Python child process run as
# `python -c SCENARIO MODULE ...`): loads the module named by argv[1];
# rv_of(call) is the CK_RV a call raised, 0 when it returned.
PYKCS11_PRELUDE = r"""
import json, sys
import PyKCS11
from PyKCS11 import *

lib = PyKCS11Lib()
lib.load(sys.argv[1])

def rv_of(call):
    try:
        call()
        return 0
    except PyKCS11Error as e:
        return e.value

def card_session(label="card1", pin=None):
    # A read/write session of the token `label`, logged in with `pin`.
    slot = [s for s in lib.getSlotList(tokenPresent=True)
            if lib.getTokenInfo(s).label.strip() == label][0]
    session = lib.openSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION)
    session.login(pin)
    return slot, session

def Raw(mech, param=b""):
    # A mechanism whose parameter is bytes (an IV, a CK_MAC_GENERAL_PARAMS, ...).
    return PyKCS11.Mechanism(mech, param or None)
"""

# PyKCS11 scenarios load the module into an uninstrumented Python.
skip_under_asan = pytest.mark.skipif(
    os.environ.get("PRELOADRUN_SANITIZE") == "1",
    reason="uninstrumented client cannot load the ASan-built module")


def _env_path(name):
    path = os.environ.get(name)
    if not path:
        pytest.fail(f"{name} is not set: run these tests through ctest")
    return path


@pytest.fixture(scope="session")
def module_path():
    return _env_path("PKCS11_MODULE")


@pytest.fixture(scope="session")
def driver_bin():
    return _env_path("P11_DRIVER")


@pytest.fixture(scope="session")
def holder_bin():
    return _env_path("TOKENS_HOLDER")


def setup_world(sim):
    pf = sim.create_token("card1", PIN)
    sim.ok("key", "generate", "--type", "ec-p256", "--label", "eck", "--id", "01",
           "--protect", "softcard:card1", "--passphrase-file", pf)
    sim.ok("key", "generate", "--type", "rsa-2048", "--label", "modrsa", "--id", "02",
           "--protect", "module")
    sim.pinfile = pf
    return sim


@pytest.fixture
def world(make_service):
    return setup_world(make_service(modules=3, init_delay_ms=50))


def client_env(sim, loadsharing=True, reload=False, tokens_file=None, extra=None):
    env = env_with(sim.env, CKNFAST_LOADSHARING=None, CKNFAST_RELOAD_KEYS=None,
                   NFAST_NFKM_TOKENSFILE=None)
    if loadsharing:
        env["CKNFAST_LOADSHARING"] = "1"
    if reload:
        env["CKNFAST_RELOAD_KEYS"] = "1"
    if tokens_file:
        env["NFAST_NFKM_TOKENSFILE"] = tokens_file
    env["PRELOADRUN_PKCS11_LOG"] = os.path.join(sim.root, "p11.log")
    env["PRELOADRUN_PKCS11_LOG_LEVEL"] = "debug"
    if extra:
        env.update(extra)
    return env


def module_log(sim):
    try:
        with open(os.path.join(sim.root, "p11.log")) as f:
            return f.read()
    except OSError:
        return ""


def run(args, env, timeout=120, check=True, input=None):
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout,
                       input=input)
    if check and r.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} exited {r.returncode}\n"
                    f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r


def ops(sim):
    return {n: m["ops"] for n, m in sim.modules().items()}


def serves_through_a_clear(sim, holder, module_path, scenario):
    """Runs a PyKCS11 `scenario` (argv: module, PIN) that makes token keys
    and prints {"wrong": N} after each burst of operations with them, reading
    a line from stdin before the second burst and another before it ends.
    Checks that the first burst is served by every module and gives no wrong
    answer; clears module 2 and republishes the tokens file (`holder`);
    checks that the second burst gives no wrong answer and that module 2
    serves again."""
    env = client_env(sim, reload=True, tokens_file=holder.path)
    before = ops(sim)
    p = subprocess.Popen([sys.executable, "-c", scenario, module_path, PIN], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert json.loads(p.stdout.readline()) == {"wrong": 0}, p.stderr.read()
        spread = ops(sim)
        assert all(spread[n] > before[n] for n in spread), (before, spread)
        sim.ok("module", "clear", "2")
        sim.wait_module(2, "usable")
        holder.command("publish")
        cleared = ops(sim)[2]
        p.stdin.write("go\n")
        p.stdin.flush()
        assert json.loads(p.stdout.readline()) == {"wrong": 0}, p.stderr.read()
        wait_for(lambda: ops(sim)[2] > cleared, timeout=30, what="module 2 serving again")
        p.stdin.write("end\n")
        p.stdin.flush()
        assert p.wait(30) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


class Holder:
    """tokens_holder: a stand-in for preloadrun holding a live tokens file."""

    def __init__(self, binary, sim, path):
        self.path = path
        self.proc = subprocess.Popen([binary, path, sim.socket, "card1", sim.pinfile],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.wait_ready()

    def wait_ready(self):
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            pytest.fail(f"tokens_holder: {line!r} {self.proc.stderr.read()}")
        return line

    def command(self, cmd, ready=True):
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        if ready:
            return self.wait_ready()
        return None

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.command("quit", ready=False)
                self.proc.wait(10)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def make_holder(holder_bin):
    holders = []

    def factory(sim):
        d = os.path.join(sim.root, "tf")
        os.makedirs(d, mode=0o700, exist_ok=True)
        h = Holder(holder_bin, sim, os.path.join(d, "tokens.json"))
        holders.append(h)
        return h

    yield factory
    for h in holders:
        h.stop()



class SignLoop:
    """p11_driver sign-until in the background: THREADS threads sign with key
    CKA_ID 01 of card1 until stop(), so that however slow the machine, the
    client is still signing when the test acts on the fleet."""

    def __init__(self, driver_bin, module_path, env, root, threads=3, pin=PIN):
        self.stop_file = os.path.join(root, f"stop-{id(self)}")
        self.proc = subprocess.Popen([driver_bin, "sign-until", module_path, "card1", pin, "01",
                                      self.stop_file, str(threads)], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_signing_on(self, sim, modules, at_least=5, timeout=120):
        """Waits until each of `modules` served `at_least` more operations."""
        before = ops(sim)

        def signing():
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(f"the client ended early: {out}{err}")
            now = ops(sim)
            return all(now[n] - before.get(n, 0) >= at_least for n in modules)

        wait_for(signing, timeout=timeout, what=f"the client signing on modules {modules}")

    def stop(self, timeout=240):
        """Stops the loop; returns its CompletedProcess."""
        open(self.stop_file, "w").close()
        out, err = self.proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def make_sign_loop(driver_bin, module_path):
    """make_sign_loop(sim, env, threads=3, pin=PIN): a started SignLoop,
    killed at the end of the test if it still runs."""
    loops = []

    def factory(sim, env, threads=3, pin=PIN):
        loop = SignLoop(driver_bin, module_path, env, sim.root, threads, pin)
        loops.append(loop)
        return loop

    yield factory
    for loop in loops:
        loop.kill()
