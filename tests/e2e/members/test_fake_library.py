"""Members whose library does what SoftHSM2 cannot show: a fake PKCS#11 token
(tests/support/fake_pkcs11, driven through files in its directory) that
reports slot events, sets the PIN counter's flags, and offers ECDSA only.

- Slot events: where the library supports C_WaitForSlotEvent, a token taken
  out fails its member at once and its return brings the member back at once
  (preloadrun logs in again), however long the probe interval.
- CKF_USER_PIN_FINAL_TRY and CKF_USER_PIN_LOCKED: the service never tries a
  PIN that could lock the token; preloadrun exits 125 with one line.
- The mechanisms the application sees are those every usable member offers.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import external_client
from member_service import MemberService
from p11kit_members import MemberFarm
from procs import executable, wait_for

PIN = "1234"
FAKE_TOKEN = "fake token"

SIGNER = r"""
import sys
import PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
slot = [s for s in lib.getSlotList(tokenPresent=True)
        if lib.getTokenInfo(s).label.strip() == "signing"][0]
session = lib.openSession(slot)
session.login(sys.argv[2])
key = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                           (PyKCS11.CKA_LABEL, "ec-key")])[0]
signature = session.sign(key, bytes(32), PyKCS11.Mechanism(PyKCS11.CKM_ECDSA))
print(len(signature))
"""

CLIENT = r"""
import json, sys
import PyKCS11
lib = PyKCS11.PyKCS11Lib()
lib.load(sys.argv[1])
slot = lib.getSlotList(tokenPresent=True)[0]
names = [PyKCS11.CKM[m] if isinstance(m, int) else m for m in lib.getMechanismList(slot)]
print(json.dumps(names))
"""


class NoFarm:
    """No SoftHSM2 member: the fake library's only."""
    members = []
    pin = PIN


@pytest.fixture
def tools():
    library = os.environ.get("FAKE_PKCS11")
    if not library or not os.path.exists(library):
        pytest.fail(f"FAKE_PKCS11={library!r} is not the fake library: run through ctest")
    return {"hsmfleet": executable("HSMFLEET"), "preloadrun": executable("PRELOADRUN"),
            "module": executable("PKCS11_MODULE"), "fake": library}


def fake_token(directory, key_pem=None, events=True, **files):
    """A fake token's directory: its key (a new P-256 one unless given), PIN,
    and control files."""
    os.makedirs(directory, mode=0o700)
    key = os.path.join(directory, "key.pem")
    if key_pem:
        shutil.copy(key_pem, key)
    else:
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", key], check=True,
                       capture_output=True)
    files.setdefault("pin", PIN + "\n")
    files.setdefault("id", "01")
    files.setdefault("label", "ec-key")
    if events:
        files["events"] = ""
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)
    return directory


def add_fake_member(service, tools, directory, name="fake"):
    service.extra_members.append({"name": name, "library": tools["fake"], "label": FAKE_TOKEN,
                                  "env": {"FAKE_PKCS11_DIR": directory}})


def calls(directory):
    try:
        with open(os.path.join(directory, "calls.log")) as f:
            return f.read().split("\n")
    except FileNotFoundError:
        return []


def pin_file(root):
    path = os.path.join(root, "pin")
    with open(path, "w") as f:
        f.write(PIN + "\n")
    os.chmod(path, 0o600)
    return path


def fake_fleet(tmp_path, tools, probe_interval, timeout="1500ms", **token_files):
    token = fake_token(str(tmp_path / "token"), **token_files)
    service = MemberService(tools["hsmfleet"], str(tmp_path), NoFarm(),
                            probe_interval=probe_interval, timeout=timeout)
    add_fake_member(service, tools, token)
    service.start()
    return service, token


def test_slot_events_fail_and_bring_back_a_member_without_the_probe(tmp_path, tools):
    # Probed every 10 minutes: only the library's slot events can tell in time.
    service, token = fake_fleet(tmp_path, tools, "10m")
    try:
        service.wait_module("fake", lambda m: m["state"] == "usable", "usable", 10)
        supervised = subprocess.Popen(
            [tools["preloadrun"], "-s", "signing", "--passphrase-file", pin_file(str(tmp_path)),
             "--", "sleep", "60"], env=service.env,
            stderr=open(tmp_path / "preloadrun.log", "w"))
        try:
            first = service.wait_module("fake", lambda m: m["objects"] > 0, "loaded", 20)
            absent = os.path.join(token, "absent")
            open(absent, "w").close()
            start = time.monotonic()
            service.wait_module("fake", lambda m: m["state"] == "failed",
                                "failed when its token was taken out", 5)
            gone_after = time.monotonic() - start
            # Its new worker found no token, and waits for the library's event.
            wait_for(lambda: "trying again at its library's slot event" in service.log(),
                     timeout=5, what="a worker waiting for the token")
            os.unlink(absent)
            start = time.monotonic()
            service.wait_module(
                "fake", lambda m: m["state"] == "usable" and m["objects"] > 0 and
                m["generation"] > first["generation"], "back, and loaded again by preloadrun", 10)
            back_after = time.monotonic() - start
            assert gone_after < 3 and back_after < 5, (gone_after, back_after)
            assert supervised.poll() is None
            # One login at the start, one after the token came back.
            assert calls(token).count("login ok") == 2, calls(token)
            assert "wait_for_slot_event" in calls(token)
        finally:
            supervised.terminate()
            supervised.wait(30)
    finally:
        assert service.stop() == 0, service.log()


def test_without_slot_events_the_probe_interval_rules(tmp_path, tools):
    service, token = fake_fleet(tmp_path, tools, "10m", events=False)
    try:
        service.wait_module("fake", lambda m: m["state"] == "usable", "usable", 10)
        open(os.path.join(token, "absent"), "w").close()
        time.sleep(1.5)
        # Nothing asked it anything: it is not known to be gone yet.
        assert service.modules()["fake"]["state"] == "usable"
    finally:
        assert service.stop() == 0, service.log()


@pytest.mark.parametrize("flags,said", [
    ("final_try", "one more wrong PIN would lock the token: not tried"),
    ("locked", "the token's user PIN is locked"),
])
def test_a_pin_that_could_lock_the_token_is_never_tried(tmp_path, tools, flags, said):
    service, token = fake_fleet(tmp_path, tools, "300ms", pin_flags=flags)
    try:
        service.wait_module("fake", lambda m: m["state"] == "usable", "usable", 10)
        r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                            pin_file(str(tmp_path)), "--", "true"], env=service.env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 125, r.stderr
        lines = r.stderr.strip().split("\n")
        assert len(lines) == 1 and said in lines[0] and "CKR_PIN_LOCKED" in lines[0], r.stderr
        assert not any(c.startswith("login") for c in calls(token)), calls(token)
        assert service.modules()["fake"]["objects"] == 0
        # Its count reset (by the vendor's tools): the same PIN logs in; a
        # count that is low does not stop it.
        with open(os.path.join(token, "pin_flags"), "w") as f:
            f.write("count_low\n")
        r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                            pin_file(str(tmp_path)), "--", "true"], env=service.env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert calls(token).count("login ok") == 1, calls(token)
    finally:
        assert service.stop() == 0, service.log()


def mechanisms_seen(service, tools, root):
    r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                        pin_file(root), "--", sys.executable, "-c", CLIENT, tools["module"]],
                       env=service.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return set(json.loads(r.stdout))


@external_client
def test_the_application_sees_what_every_member_can_do(tmp_path, tools):
    with MemberFarm(str(tmp_path / "farm"), names=("hsm-a",)) as farm:
        # The fake token holds the farm's EC key (its CKA_ID and public key),
        # and offers CKM_ECDSA only.
        token = fake_token(str(tmp_path / "token"), key_pem=farm.key_paths["ec"])
        service = MemberService(tools["hsmfleet"], str(tmp_path), farm)
        service.write_config()
        service.start()
        try:
            alone = mechanisms_seen(service, tools, str(tmp_path))
            assert {"CKM_ECDSA", "CKM_RSA_PKCS", "CKM_RSA_PKCS_PSS",
                    "CKM_RSA_PKCS_OAEP"} - alone == set(), sorted(alone)
            # p11-kit's client (0.24) does not forward AES-GCM's parameters:
            # a member behind it does not offer it, so neither does the module.
            assert "CKM_AES_GCM" not in alone
            add_fake_member(service, tools, token)
            service.write_config()
            service.wait_module("fake", lambda m: m["state"] == "usable", "joined", 20)
            both = mechanisms_seen(service, tools, str(tmp_path))
            assert "CKM_ECDSA" in both and "CKM_ECDSA_SHA256" in both, both
            assert not both & {"CKM_RSA_PKCS", "CKM_RSA_PKCS_PSS", "CKM_RSA_PKCS_OAEP",
                               "CKM_SHA256_RSA_PKCS", "CKM_AES_GCM"}, both
            service.cli("module", "fail", str(service.modules()["fake"]["number"]))
            assert mechanisms_seen(service, tools, str(tmp_path)) == alone
        finally:
            assert service.stop() == 0, service.log()


@external_client
def test_a_token_of_very_many_objects_is_read_page_by_page(tmp_path, tools):
    # About 1.3 MiB of key objects: more than a frame holds, read in pages.
    service, token = fake_fleet(tmp_path, tools, "300ms", timeout="30s",
                                public_copies="10000\n")
    try:
        service.wait_module("fake", lambda m: m["state"] == "usable", "usable", 60)
        r = subprocess.run([tools["preloadrun"], "-s", "signing", "--passphrase-file",
                            pin_file(str(tmp_path)), "--", sys.executable, "-c", SIGNER,
                            tools["module"], PIN], env=service.env, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "64", r.stdout
        assert "too many objects" not in service.log()
    finally:
        assert service.stop() == 0, service.log()
