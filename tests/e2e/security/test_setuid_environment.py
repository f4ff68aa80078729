"""A program that runs with more privileges than its caller (setuid) and
loads the PKCS#11 module must not let the caller steer the module through
the environment: not to a service of the caller's (HSMSIM_SOCKET), not to a
log file of the caller's choosing, written with the program's privileges
(PRELOADRUN_PKCS11_LOG). The module reads its environment with
secure_getenv.

The setuid program here is the test driver of the module, made setuid
VICTIM; ATTACKER runs it with a trap set: a fake service of its own, and a
log path in VICTIM's home.
"""

import os
import shutil
import subprocess

import pytest

from conftest import ATTACKER, PY, VICTIM
from procs import executable, read_first_line

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def trap(machine):
    """ATTACKER's fake service (a socket anyone may use, in a directory
    anyone may enter) and the setuid-VICTIM copy of the driver."""
    trap_dir = os.path.join(machine.root, "trap")
    os.mkdir(trap_dir, 0o755)
    os.chown(trap_dir, ATTACKER, ATTACKER)
    machine.fake_socket = os.path.join(trap_dir, "hsm.sock")
    machine.fake_log = os.path.join(trap_dir, "requests.log")
    fake = machine.spawn(ATTACKER, [PY, os.path.join(HERE, "fake_service.py"),
                                    machine.fake_socket, machine.fake_log],
                         env=machine.env(ATTACKER, WIRE_PB2_DIR=os.environ["WIRE_PB2_DIR"]),
                         stdout=subprocess.PIPE)
    assert read_first_line(fake, 15) == "listening"
    machine.setuid_driver = os.path.join(machine.root, "driver-setuid-victim")
    shutil.copy(executable("P11_DRIVER"), machine.setuid_driver)
    os.chown(machine.setuid_driver, VICTIM, VICTIM)
    os.chmod(machine.setuid_driver, 0o4755)  # after chown, which clears it
    machine.module = executable("PKCS11_MODULE")
    return machine


def steered_env(machine, uid, log):
    return machine.env(uid, HSMSIM_SOCKET=machine.fake_socket, PRELOADRUN_PKCS11_LOG=log,
                       PRELOADRUN_PKCS11_LOG_LEVEL="debug", CKNFAST_LOADSHARING="1")


def requests_seen(machine):
    try:
        with open(machine.fake_log) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_the_module_in_a_setuid_program_ignores_the_callers_environment(trap):
    planted = os.path.join(trap.home(VICTIM), "planted.log")
    r = trap.run(ATTACKER, [trap.setuid_driver, "initargs", trap.module],
                 env=steered_env(trap, ATTACKER, planted))
    assert "dlopen" not in r.stderr and r.returncode in (0, 1), r.stderr  # the module ran
    assert not os.path.exists(planted), "the caller chose where the module logs, as VICTIM"
    assert requests_seen(trap) == "", "the caller pointed the module at its own service"


def test_without_setuid_the_same_variables_are_honoured(trap):
    """The control: VICTIM running the same program (no change of uid) gets
    the log and the service it names (which it then refuses to talk to, as
    the socket is ATTACKER's: the log says so, naming that socket)."""
    own_log = os.path.join(trap.home(VICTIM), "own.log")
    trap.run(VICTIM, [trap.setuid_driver, "initargs", trap.module],
             env=steered_env(trap, VICTIM, own_log))
    assert os.path.exists(own_log)
    with open(own_log) as f:
        assert f"refusing the HSM service at {trap.fake_socket}" in f.read()
    assert requests_seen(trap) == ""
