"""OpenSSH with its keys on the HSMs: `ssh-keygen -D` lists the token's public
keys through the module, and `ssh` logs in to a local `sshd` (started by the
test on a free port) with the softcard's EC key through `PKCS11Provider`,
under preloadrun, before and after an HSM module is cleared."""

import os
import socket
import subprocess

import pytest

from conftest import client_env, run, wait_for

SSHD = "/usr/sbin/sshd"

pytestmark = [
    pytest.mark.skipif(os.environ.get("PRELOADRUN_SANITIZE") == "1",
                       reason="uninstrumented client cannot load the ASan-built module"),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def preloadrun_bin():
    path = os.environ.get("PRELOADRUN")
    if not path:
        pytest.fail("PRELOADRUN is not set: run through ctest")
    return path


def public_keys(world, module_path, preloadrun_bin):
    r = run([preloadrun_bin, "-s", "card1", "--passphrase-file", world.pinfile, "--",
             "ssh-keygen", "-D", module_path], client_env(world))
    return [line for line in r.stdout.splitlines() if line.startswith(("ecdsa-", "ssh-rsa"))]


def test_ssh_keygen_lists_the_token_keys(world, module_path, preloadrun_bin):
    keys = public_keys(world, module_path, preloadrun_bin)
    # The softcard's EC key (P-256) and the module-protected RSA key.
    assert any(k.startswith("ecdsa-sha2-nistp256 ") and k.endswith(" eck") for k in keys), keys
    assert any(k.startswith("ssh-rsa ") and k.endswith(" modrsa") for k in keys), keys


@pytest.fixture
def sshd(world, module_path, preloadrun_bin, tmp_path):
    if os.geteuid() != 0:
        pytest.fail("sshd needs root to run (the suite runs as root in CI)")
    if not os.access(SSHD, os.X_OK):
        pytest.fail(f"{SSHD} is missing: install openssh-server (scripts/dev.sh deps)")
    keys = [k for k in public_keys(world, module_path, preloadrun_bin) if k.endswith(" eck")]
    authorized = tmp_path / "authorized_keys"
    authorized.write_text("\n".join(keys) + "\n")
    authorized.chmod(0o600)
    host_key = tmp_path / "host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)],
                   check=True)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
        f"AuthorizedKeysFile {authorized}", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
        "StrictModes no", "UsePAM no", f"PidFile {tmp_path / 'sshd.pid'}", ""]))
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # its privilege separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=open(
        tmp_path / "sshd.log", "w"))

    def listening():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    try:
        wait_for(listening, timeout=10, what="sshd listening")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def ssh_login(world, module_path, preloadrun_bin, port, tmp_path):
    askpass = tmp_path / "askpass"
    if not askpass.exists():
        # ssh asks for the token's PIN; under preloadrun any PIN is taken.
        askpass.write_text("#!/bin/sh\necho any-pin\n")
        askpass.chmod(0o700)
    env = dict(client_env(world), SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force",
               DISPLAY=":0")
    return subprocess.run(
        [preloadrun_bin, "-s", "card1", "--passphrase-file", world.pinfile, "--",
         "ssh", "-F", "/dev/null", "-p", str(port), "-o", f"PKCS11Provider={module_path}",
         "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
         "-o", "PasswordAuthentication=no", "root@127.0.0.1", "echo", "logged-in"],
        env=env, capture_output=True, text=True, timeout=60)


def test_ssh_login_with_the_hsm_key(world, module_path, preloadrun_bin, sshd, tmp_path):
    r = ssh_login(world, module_path, preloadrun_bin, sshd, tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "logged-in", r.stderr
    # A module cleared (its keys gone): the next logins still work.
    world.ok("module", "clear", "2")
    for _ in range(3):
        r = ssh_login(world, module_path, preloadrun_bin, sshd, tmp_path)
        assert r.returncode == 0 and r.stdout.strip() == "logged-in", r.stderr
    # Without the key on the token, no login: the test can fail.
    other = tmp_path / "authorized_keys"
    other.write_text("")
    r = ssh_login(world, module_path, preloadrun_bin, sshd, tmp_path)
    assert r.returncode == 255 and "Permission denied (publickey)" in r.stderr, r.stderr
