"""PKCS#11 members end to end: SoftHSM2 tokens, each behind its own
`p11-kit server` (a separate "network HSM"), served by `hsmfleet serve --fleet`
as the modules of the fleet; the real preloadrun loads the token set (C_Login
with the PIN on every member) and supervises a real PKCS#11 client (the
demo's client: PyKCS11 through libpreloadrun-pkcs11, every signature checked
in software with the key's public part) while members are killed, restarted,
hung past their timeout, drained and undrained, re-initialised with a
different key, added to and removed from the configuration. The client must see no error.
"""

import os
import subprocess
import time

import pytest

from conftest import SupervisedClient, external_client
from member_service import MemberService
from p11kit_members import MemberFarm
from procs import executable, wait_for



@pytest.fixture
def tools():
    return {"hsmfleet": executable("HSMFLEET"), "preloadrun": executable("PRELOADRUN"),
            "module": executable("PKCS11_MODULE")}


@pytest.fixture
def fleet(tmp_path, tools):
    with MemberFarm(str(tmp_path / "farm")) as farm:
        service = MemberService(tools["hsmfleet"], str(tmp_path), farm)
        service.start()
        try:
            yield service
        finally:
            status = service.stop()
            log = service.log()
            assert status == 0, log
            # The workers went with the service.
            assert "worker" in log


def pin_file(service):
    path = os.path.join(service.root, "pin")
    with open(path, "w") as f:
        f.write(service.farm.pin + "\n")
    os.chmod(path, 0o600)
    return path


def usable(m):
    return m["state"] == "usable"


def serving_again(service, esn, before, timeout=20.0):
    """Waits until member `esn` is usable in a generation after `before` and
    has served an operation in it; the seconds it took."""
    start = time.monotonic()
    m = service.wait_module(esn, lambda m: usable(m) and m["generation"] > before,
                            "usable again in a new generation", timeout)
    ops = m["ops"]
    service.wait_module(esn, lambda m: m["ops"] > ops, "serving operations again", timeout)
    return time.monotonic() - start


@external_client
def test_client_sees_no_error_through_member_events(fleet, tools, tmp_path):
    service = fleet
    farm = service.farm
    client = SupervisedClient(tools, service, pin_file(service), tmp_path, 60,
                              env=dict(service.env, PRELOADRUN_PKCS11_LOG="stderr"))
    try:
        client.wait_first_signature()
        for esn in ("hsm-a", "hsm-b", "hsm-c"):
            service.wait_module(esn, lambda m: m["ops"] > 0, "serving the client")
        times = {}

        # A member's server is killed: failed; restarted: back, reset, reloaded.
        gen = service.modules()["hsm-a"]["generation"]
        farm.member("hsm-a").kill()
        service.wait_module("hsm-a", lambda m: m["state"] == "failed", "failed")
        farm.member("hsm-a").start()
        times["killed, restarted"] = serving_again(service, "hsm-a", gen)

        # Hung past the timeout (SIGSTOP): failed; resumed: back.
        gen = service.modules()["hsm-b"]["generation"]
        farm.member("hsm-b").stop()
        service.wait_module("hsm-b", lambda m: m["state"] == "failed", "failed after its timeout")
        farm.member("hsm-b").cont()
        times["hung, resumed"] = serving_again(service, "hsm-b", gen)

        # Drained for maintenance: no new operations; undrained: back.
        gen = service.modules()["hsm-b"]["generation"]
        service.cli("module", "drain", "2")
        m = service.modules()["hsm-b"]
        assert m["state"] == "failed" and m["drained"], m
        ops = service.modules()["hsm-b"]["ops"]
        time.sleep(1.0)
        assert service.modules()["hsm-b"]["ops"] == ops
        service.cli("module", "undrain", "2")
        times["drained, undrained"] = serving_again(service, "hsm-b", gen)

        # Its token re-initialised with a different key under the same id: the
        # member comes back but is never used for that key.
        gen = service.modules()["hsm-c"]["generation"]
        farm.member("hsm-c").reinit_with_other_key("ec")
        service.wait_module("hsm-c", lambda m: usable(m) and m["generation"] > gen,
                            "back after its token was re-initialised")
        wait_for(lambda: "is a different key from the one the other members hold"
                 in service.log(), what="the log line about hsm-c's different key")
        ops_c = service.modules()["hsm-c"]["ops"]

        # A member added to the configuration joins; one taken out is removed.
        farm.add_member("hsm-d")
        service.write_config(farm.members)
        m = service.wait_module("hsm-d", lambda m: usable(m) and m["ops"] > 0,
                                "joined and serving")
        assert m["number"] == 4
        service.write_config([farm.member(n) for n in ("hsm-b", "hsm-c", "hsm-d")])
        service.wait_module("hsm-a", lambda m: m["state"] == "removed", "removed")
        time.sleep(1.0)
        # hsm-c served nothing more: its key is not the set's.
        assert service.modules()["hsm-c"]["ops"] == ops_c

        client.assert_no_error(timeout=90)
    finally:
        client.stop()
    for event, seconds in times.items():
        print(f"{event}: serving again after {seconds:.2f} s")


def test_wrong_pin_exits_125_with_nothing_logged_in(fleet, tools, tmp_path):
    service = fleet
    bad = tmp_path / "bad.pin"
    bad.write_text("not-the-pin\n")
    bad.chmod(0o600)
    r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file", str(bad),
                        "--", "true"], env=service.env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 125, r.stderr
    assert "wrong passphrase for softcard signing" in r.stderr
    assert all(m["objects"] == 0 for m in service.modules().values())
    # The right PIN still works (no member was locked or left half logged in).
    r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                        pin_file(service), "--", "true"], env=service.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@external_client
def test_real_clients_over_members(fleet, tools, tmp_path):
    """pkcs11-tool signs (verified by openssl with the farm's key) and p11tool
    lists the keys, through the module, over members. p11tool forbids the
    module's threads, so it runs without key reloading."""
    service = fleet
    data = tmp_path / "data"
    data.write_bytes(b"signed over PKCS#11 members\n")
    sig = tmp_path / "sig"
    pub = tmp_path / "pub.pem"
    pub.write_bytes(service.farm.public_key_pem("ec"))
    script = (f"pkcs11-tool --module {tools['module']} --token-label signing --login "
              f"--pin any --sign -m ECDSA-SHA256 --signature-format openssl --id 01 "
              f"-i {data} -o {sig} && openssl dgst -sha256 -verify {pub} -signature {sig} "
              f"{data} && env -u CKNFAST_RELOAD_KEYS p11tool --provider {tools['module']} --list-all-privkeys "
              f"--login --set-pin=any 'pkcs11:token=signing'")
    r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                        pin_file(service), "--", "sh", "-c", script], env=service.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Verified OK" in r.stdout
    assert "ec-key" in r.stdout and "rsa-key" in r.stdout


def test_a_member_of_another_set_is_left_alone(fleet, tools):
    """Two token sets: preloadrun loads its set on its members; the member of
    the other set refuses the token, which is no warning and is not retried."""
    service = fleet
    before = service.modules()["hsm-c"]["generation"]
    service.write_config(sets={"signing": ["hsm-a", "hsm-b"], "other": ["hsm-c"]})
    wait_for(lambda: "other" in service.cli("softcard", "list").stdout, what="the second set")
    # Its set changed: hsm-c was reset (a new generation), and is back.
    service.wait_module("hsm-c", lambda m: usable(m) and m["generation"] > before,
                        "hsm-c back after the change of its set")
    r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                        pin_file(service), "--", "sleep", "1"], env=service.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr and "error" not in r.stderr, r.stderr
    assert "module 3: member hsm-c (module 3) does not hold that token (it is in set other)" \
        in r.stderr
    assert r.stderr.count("module 3:") == 1, r.stderr  # not tried again
