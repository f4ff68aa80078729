"""What the module tells the application's user, with a real client.

A failed C_Initialize is one line on stderr naming the library, the reason
and the fix, whatever PRELOADRUN_PKCS11_LOG_LEVEL says: not two when the log
goes to stderr already, in syslog instead with PRELOADRUN_PKCS11_LOG=syslog,
nowhere with PRELOADRUN_PKCS11_LOG=off. A tokens file that will not be used
is one warning line at C_Initialize. The client's own output (stdout) is
what it is without the module's lines, and a run that succeeds gets nothing
on stderr from the module."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from conftest import PIN, client_env, run, setup_world
from module_lines import notices
from procs import env_with

# pkcs11-tool cannot load the ASan-built module: these run in the regular build.
pytestmark = pytest.mark.skipif(
    os.environ.get("PRELOADRUN_SANITIZE") == "1",
    reason="uninstrumented client cannot load the ASan-built module; runs in the regular build")

def quiet_env(sim, **extra):
    """A client's environment without the module's log (the default), with
    `extra` (None: unset)."""
    return env_with(client_env(sim), **{"PRELOADRUN_PKCS11_LOG": None,
                                        "PRELOADRUN_PKCS11_LOG_LEVEL": None, **extra})


def list_slots(module_path):
    return ["pkcs11-tool", "--module", module_path, "--list-slots"]


def list_objects(module_path, pin=PIN):
    return ["pkcs11-tool", "--module", module_path, "--token-label", "card1", "--login",
            "--pin", pin, "--list-objects"]


def unreachable(sim, how):
    """A socket path where no service answers: none at all, or a socket
    nobody listens on."""
    path = os.path.join(sim.root, f"{how}.sock")
    if how == "refused":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.close()
    return path


LOG_SETTINGS = {
    # name: (PRELOADRUN_PKCS11_LOG, PRELOADRUN_PKCS11_LOG_LEVEL, lines on stderr)
    "default": (None, None, 1),
    "stderr": ("stderr", None, 1),
    "stderr-debug": ("stderr", "debug", 1),
    "stderr-level-off": ("stderr", "off", 1),
    "file": ("FILE", None, 1),
    "file-level-off": ("FILE", "off", 1),
    "off": ("off", None, 0),
}


@pytest.mark.parametrize("setting", list(LOG_SETTINGS))
def test_failed_c_initialize_is_one_line_whatever_the_log_level(world, module_path, setting):
    where, level, expected = LOG_SETTINGS[setting]
    log_file = os.path.join(world.root, "module.log")
    missing = unreachable(world, "missing")
    env = quiet_env(world, HSMSIM_SOCKET=missing,
                    PRELOADRUN_PKCS11_LOG=log_file if where == "FILE" else where,
                    PRELOADRUN_PKCS11_LOG_LEVEL=level)
    r = run(list_slots(module_path), env, check=False)
    assert r.returncode != 0
    assert "CKR_FUNCTION_FAILED" in r.stderr + r.stdout
    said = [m for lvl, m in notices(r.stderr) if "C_Initialize" in m]
    assert len(said) == expected, r.stderr
    if expected:
        assert notices(r.stderr)[0][0] == "error"
        assert said[0] == (f"C_Initialize failed: cannot reach the HSM service at {missing}: "
                           "No such file or directory (is `hsmfleet serve` running? start it, or "
                           "set HSMFLEET_SOCKET to its socket)"), said
    else:
        assert "libpreloadrun-pkcs11" not in r.stderr, r.stderr
    # stdout is the client's alone: the same whatever the module's settings.
    bare = run(list_slots(module_path), quiet_env(world, HSMSIM_SOCKET=missing,
                                                  PRELOADRUN_PKCS11_LOG="off"), check=False)
    assert r.stdout == bare.stdout
    assert "libpreloadrun-pkcs11" not in r.stdout
    if where == "FILE":
        with open(log_file) as f:
            logged = [line for line in f if "C_Initialize" in line]
        assert len(logged) == 1 and "error: C_Initialize failed: cannot reach" in logged[0], logged


def test_a_socket_nobody_listens_on(world, module_path):
    refused = unreachable(world, "refused")
    r = run(list_slots(module_path), quiet_env(world, HSMSIM_SOCKET=refused), check=False)
    assert r.returncode != 0
    assert notices(r.stderr) == [
        ("error", f"C_Initialize failed: cannot reach the HSM service at {refused}: Connection "
                  "refused (is `hsmfleet serve` running? start it, or set HSMFLEET_SOCKET to its "
                  "socket)")], r.stderr


def test_a_successful_run_prints_nothing_more(world, module_path, make_holder):
    r = run(list_objects(module_path), quiet_env(world))
    assert "label:      eck" in r.stdout
    assert r.stderr == "", r.stderr
    # With a live tokens file of this user and this service: nothing either.
    holder = make_holder(world)
    r = run(list_objects(module_path, pin="anything"),
            quiet_env(world, NFAST_NFKM_TOKENSFILE=holder.path))
    assert "label:      eck" in r.stdout
    assert r.stderr == "", r.stderr


def test_a_tokens_file_that_is_not_used_is_told_at_c_initialize(world, module_path,
                                                                make_holder):
    missing = os.path.join(world.root, "no-such-tokens.json")
    r = run(list_objects(module_path), quiet_env(world, NFAST_NFKM_TOKENSFILE=missing))
    assert "label:      eck" in r.stdout  # logged in with the passphrase
    assert notices(r.stderr) == [
        ("warning", f"tokens file {missing} not used (missing): {missing}: no such file; "
                    "C_Login on its tokens needs their passphrase (or point "
                    "NFAST_NFKM_TOKENSFILE at a live file)")], r.stderr

    holder = make_holder(world)
    holder.command("die", ready=False)
    holder.proc.wait(10)
    env = quiet_env(world, NFAST_NFKM_TOKENSFILE=holder.path)
    r = run(list_objects(module_path), env)
    assert "label:      eck" in r.stdout
    said = notices(r.stderr)
    assert len(said) == 1 and said[0][0] == "warning", r.stderr
    assert said[0][1].startswith(f"tokens file {holder.path} not used (owner dead): preloadrun "
                                 f"pid {holder.proc.pid} is gone"), said
    # Not used: the PIN is checked, where a live file would let any PIN in.
    r = run(list_objects(module_path, pin="anything"), env, check=False)
    assert r.returncode != 0 and "CKR_PIN_INCORRECT" in r.stdout + r.stderr


def test_a_tokens_file_of_another_service_is_told_at_c_initialize(make_service, world,
                                                                  module_path, make_holder):
    """preloadrun loaded the tokens on one service, the application talks to
    another: without key reloading the file is never used."""
    holder = make_holder(world)
    other = setup_world(make_service(modules=1, init_delay_ms=0))
    env = quiet_env(other, NFAST_NFKM_TOKENSFILE=holder.path, CKNFAST_LOADSHARING="1")
    r = run(list_slots(module_path), env)
    said = notices(r.stderr)
    assert len(said) == 1 and said[0][0] == "warning", r.stderr
    assert said[0][1].startswith(f"tokens file {holder.path} names another instance of the HSM "
                                 "service ("), said
    assert f"at {other.socket}), " in said[0][1], said
    assert said[0][1].endswith("not used; C_Login on its tokens needs their passphrase (or "
                               "point NFAST_NFKM_TOKENSFILE at a live file)"), said
    # With key reloading, it waits for preloadrun to publish this instance.
    r = run(list_slots(module_path), dict(env, CKNFAST_RELOAD_KEYS="1"))
    said = notices(r.stderr)
    assert len(said) == 1 and said[0][1].endswith(
        "its handles are used once preloadrun publishes them for this one"), said


SYSLOG_RECEIVER = textwrap.dedent("""
    # In a mount namespace of its own: /dev is a new tmpfs, /dev/log a socket
    # read here; runs argv and prints what it said and what reached syslog.
    import json, os, socket, stat, subprocess, sys
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", "/dev"], check=True)
    for name, minor in (("null", 3), ("zero", 5), ("random", 8), ("urandom", 9)):
        os.mknod("/dev/" + name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
        os.chmod("/dev/" + name, 0o666)
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind("/dev/log")
    r = subprocess.run(sys.argv[1:], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log.settimeout(0.5)
    got = []
    try:
        while True:
            got.append(log.recv(65536).decode(errors="replace"))
    except socket.timeout:
        pass
    print(json.dumps({"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr,
                      "syslog": got}))
    """)


def test_with_syslog_the_line_goes_to_syslog_not_stderr(world, module_path):
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace with its own /dev/log")
    missing = unreachable(world, "missing")
    env = quiet_env(world, HSMSIM_SOCKET=missing, PRELOADRUN_PKCS11_LOG="syslog")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c",
                        SYSLOG_RECEIVER, *list_slots(module_path)],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["rc"] != 0
    assert "libpreloadrun-pkcs11" not in out["stderr"] + out["stdout"], out
    lines = [m for m in out["syslog"] if "C_Initialize" in m]
    assert len(lines) == 1, out["syslog"]
    # Priority LOG_ERR (3) in the application's facility (LOG_USER: 8), under
    # the application's own name: the module calls no openlog().
    assert lines[0].startswith("<11>"), lines
    assert " pkcs11-tool: libpreloadrun-pkcs11: error: C_Initialize failed: cannot reach the " \
           f"HSM service at {missing}: " in lines[0], lines
