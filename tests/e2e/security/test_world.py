"""The Security World against another local user (ATTACKER).

The world (NFAST_KMDATA) holds every token's KDF salt and wrapped token key
and every wrapped private key: ATTACKER must not read it (offline
passphrase guessing), must not destroy VICTIM's keys (on the wire, with a
token handle of its own, or through the PKCS#11 module without logging in),
and must not deny service to VICTIM by filling the world or making its
listings too large for one frame.
"""

import json
import os
import re
import stat
import subprocess

import pytest

from conftest import ATTACKER, PY, SERVICE, VICTIM, base_env

HERE = os.path.dirname(os.path.abspath(__file__))
VICTIM_PASS = "victim-passphrase"
ATTACKER_PASS = "attacker-passphrase"
IDENT_RE = re.compile(r"\(ident ([0-9a-f]{40})\)")
CKR_OK = 0
CKR_USER_NOT_LOGGED_IN = 0x101


# -- helpers ------------------------------------------------------------------

def hsmsim(machine, uid, *args, timeout=60):
    return machine.run(uid, [machine.hsmsim, *args], timeout=timeout)


def passfile(machine, uid, passphrase):
    return machine.file_for(uid, f"pass-{len(machine.homes)}-{uid}", passphrase + "\n")


def create_softcard(machine, uid, name, passphrase):
    r = hsmsim(machine, uid, "softcard", "create", name, "--passphrase-file",
               passfile(machine, uid, passphrase))
    assert r.returncode == 0, r.stderr


def generate(machine, uid, label, protect, passphrase=None, key_id="01"):
    args = ["key", "generate", "--type", "ec-p256", "--label", label, "--protect", protect]
    if key_id is not None:  # None: no CKA_ID (keys with one may not share it)
        args += ["--id", key_id]
    if passphrase is not None:
        args += ["--passphrase-file", passfile(machine, uid, passphrase)]
    r = hsmsim(machine, uid, *args)
    assert r.returncode == 0, r.stderr
    return IDENT_RE.search(r.stdout).group(1)


def token_hash(machine, uid, name):
    r = hsmsim(machine, uid, "softcard", "list", "--json")
    assert r.returncode == 0, r.stderr
    return next(t["hash"] for t in json.loads(r.stdout) if t["name"] == name)


def b64(hex_text):
    import base64
    return base64.b64encode(bytes.fromhex(hex_text)).decode()


class Session:
    """wire_session.py run as `uid`: one connection to the shared service,
    open until close()."""

    def __init__(self, machine, uid):
        env = machine.env(uid, WIRE_PB2_DIR=os.environ["WIRE_PB2_DIR"], PYTHONPATH=HERE,
                          PYTHONDONTWRITEBYTECODE="1")
        self.proc = machine.spawn(uid, [PY, os.path.join(HERE, "wire_session.py"),
                                        machine.socket],
                                  env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)

    def call(self, request):
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"wire_session ended (exit status {self.proc.poll()})"
        return json.loads(line)

    def load_token(self, module, hash_hex, passphrase):
        r = self.call({"load_token": {"module": module, "token_hash": b64(hash_hex),
                                      "passphrase": b64(passphrase.encode().hex())}})
        assert "handle" in r, r
        return int(r["handle"]["handle"])

    def destroy(self, ident, module=0, token_handle=0):
        return self.call({"destroy_key": {"ident": ident, "module": module,
                                          "token_handle": token_handle}})

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)


def error_code(response):
    assert "error" in response, f"expected an error, got {response}"
    return response["error"].get("code", "ERROR_INTERNAL")


def key_file(machine, ident):
    return os.path.join(machine.kmdata, f"key_{ident}")


def p11(machine, uid, *args, env=None):
    """p11_driver as `uid`, with the PKCS#11 module; must exit 0."""
    r = machine.run(uid, [os.environ["P11_DRIVER"], args[0], os.environ["PKCS11_MODULE"],
                          *args[1:]], env=env or machine.env(uid), timeout=120)
    assert r.returncode == 0, f"p11_driver {args}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def victim_signs(machine):
    out = p11(machine, VICTIM, "sign", "vcard", VICTIM_PASS, "01", "3", "1")
    assert "ok=3 errors=0" in out, out


@pytest.fixture
def victim_keys(shared):
    """VICTIM's softcard `vcard` with EC key `vkey` (CKA_ID 01), and a
    module-protected key `vmod` of VICTIM's."""
    create_softcard(shared, VICTIM, "vcard", VICTIM_PASS)
    card = generate(shared, VICTIM, "vkey", "softcard:vcard", VICTIM_PASS)
    module = generate(shared, VICTIM, "vmod", "module", key_id="02")
    return {"card": card, "module": module, "hash": token_hash(shared, VICTIM, "vcard")}


# -- the world is private -------------------------------------------------------

def test_world_files_are_private_to_the_service(shared, victim_keys):
    kmdata = shared.kmdata
    st = os.stat(kmdata)
    assert st.st_uid == SERVICE
    assert stat.S_IMODE(st.st_mode) == 0o700, oct(st.st_mode)
    names = os.listdir(kmdata)
    card = f"card_{victim_keys['hash']}"
    assert card in names and "world" in names
    for name in names:
        mode = stat.S_IMODE(os.stat(os.path.join(kmdata, name)).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    # ATTACKER can read none of it: not the salt and wrapped key of the
    # victim's softcard, not the keys, not even the names.
    for path in [os.path.join(kmdata, card), key_file(shared, victim_keys["card"]),
                 key_file(shared, victim_keys["module"]), os.path.join(kmdata, "world")]:
        r = shared.run(ATTACKER, ["cat", path])
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout)
    r = shared.run(ATTACKER, ["ls", kmdata])
    assert r.returncode != 0 and r.stdout == "", r.stdout


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o770, 0o705])
def test_serve_refuses_a_world_others_can_use(machine, mode):
    srv = os.path.join(machine.root, "srv")
    os.mkdir(srv, 0o755)
    os.chown(srv, SERVICE, SERVICE)
    kmdata = os.path.join(srv, "kmdata")
    os.mkdir(kmdata)
    os.chmod(kmdata, mode)
    os.chown(kmdata, SERVICE, SERVICE)
    r = serve_once(machine, kmdata, srv)
    assert r.returncode == 1, (r.returncode, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert f"chmod -R go-rwx {kmdata}" in lines[0], lines[0]
    assert os.listdir(kmdata) == [], "a refused world was written to"
    assert not os.path.exists(os.path.join(srv, "client.sock"))


def test_serve_refuses_a_world_another_user_owns(machine):
    srv = os.path.join(machine.root, "srv")
    os.mkdir(srv, 0o755)
    os.chown(srv, SERVICE, SERVICE)
    kmdata = os.path.join(srv, "kmdata")
    os.mkdir(kmdata)
    os.chmod(kmdata, 0o777)
    os.chown(kmdata, ATTACKER, ATTACKER)  # planted by another user, open to all
    r = serve_once(machine, kmdata, srv)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert f"uid {ATTACKER}" in r.stderr and kmdata in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.listdir(kmdata) == [], "a refused world was written to"


def serve_once(machine, kmdata, srv):
    env = base_env()
    env.update(HOME=machine.root, NFAST_KMDATA=kmdata,
               HSMSIM_SOCKET=os.path.join(srv, "client.sock"),
               HSMSIM_ADMIN_SOCKET=os.path.join(srv, "admin.sock"))
    return machine.run(SERVICE, [machine.hsmsim, "serve", "--modules", "1"], env=env,
                       groups=(), timeout=15)


# -- destroying keys --------------------------------------------------------------

def test_attacker_cannot_destroy_victims_keys_on_the_wire(shared, victim_keys):
    create_softcard(shared, ATTACKER, "acard", ATTACKER_PASS)
    # VICTIM has its softcard loaded on module 1 (as preloadrun would), on a
    # connection that stays open for the whole test.
    victim = Session(shared, VICTIM)
    victim_handle = victim.load_token(1, victim_keys["hash"], VICTIM_PASS)
    attacker = Session(shared, ATTACKER)
    attacker_handle = attacker.load_token(1, token_hash(shared, ATTACKER, "acard"),
                                          ATTACKER_PASS)
    card_key, module_key = victim_keys["card"], victim_keys["module"]

    refused = attacker.destroy(card_key)
    assert error_code(refused) == "ERROR_PERMISSION", refused
    assert "loaded" in refused["error"]["message"]
    # The victim's own handle: another uid's object.
    assert error_code(attacker.destroy(card_key, 1, victim_handle)) == "ERROR_PERMISSION"
    # The attacker's handle of its own softcard: not the key's token.
    assert error_code(attacker.destroy(card_key, 1, attacker_handle)) == "ERROR_PERMISSION"
    # Handles it guesses: none is the victim's token of its own.
    for guess in range(1, 20):
        assert error_code(attacker.destroy(card_key, 1, guess)) in (
            "ERROR_PERMISSION", "ERROR_INVALID_HANDLE")
    # VICTIM's module-protected key: only its creator, root and the service.
    refused = attacker.destroy(module_key)
    assert error_code(refused) == "ERROR_PERMISSION", refused
    assert f"uid {VICTIM}" in refused["error"]["message"]
    attacker.close()

    assert os.path.exists(key_file(shared, card_key))
    assert os.path.exists(key_file(shared, module_key))
    victim_signs(shared)
    # The owner, with the token loaded, may.
    assert "ok" in victim.destroy(card_key, 1, victim_handle)
    assert "ok" in victim.destroy(module_key)
    assert not os.path.exists(key_file(shared, card_key))
    assert not os.path.exists(key_file(shared, module_key))
    victim.close()


def test_pkcs11_without_login_cannot_destroy_a_softcard_key(shared, victim_keys):
    # ATTACKER sees VICTIM's public key in the softcard's slot without logging
    # in; destroying it must not destroy the key pair.
    out = p11(shared, ATTACKER, "destroy", "vcard", "-", "01", "public")
    m = re.search(r"rv=0x([0-9a-f]+) left=(\d+)", out)
    assert m, out
    assert int(m.group(1), 16) == CKR_USER_NOT_LOGGED_IN, out
    assert m.group(2) == "1", out
    assert os.path.exists(key_file(shared, victim_keys["card"]))
    # So does VICTIM itself without logging in.
    out = p11(shared, VICTIM, "destroy", "vcard", "-", "01", "public")
    assert f"rv=0x{CKR_USER_NOT_LOGGED_IN:x} " in out, out
    victim_signs(shared)
    # Logged in (the token loaded with its passphrase), the owner may.
    out = p11(shared, VICTIM, "destroy", "vcard", VICTIM_PASS, "01", "private")
    assert f"rv=0x{CKR_OK:x} left=0" in out, out
    assert not os.path.exists(key_file(shared, victim_keys["card"]))


def test_cli_destroy_needs_the_passphrase_or_the_right(shared, victim_keys):
    card_key, module_key = victim_keys["card"], victim_keys["module"]
    create_softcard(shared, ATTACKER, "acard", ATTACKER_PASS)
    r = hsmsim(shared, ATTACKER, "key", "destroy", card_key, "--passphrase-file",
               passfile(shared, ATTACKER, ATTACKER_PASS))
    assert r.returncode == 1 and "passphrase" in r.stderr.lower(), r.stderr
    r = hsmsim(shared, ATTACKER, "key", "destroy", module_key)
    assert r.returncode == 1 and "may not destroy" in r.stderr, r.stderr
    assert os.path.exists(key_file(shared, card_key))
    assert os.path.exists(key_file(shared, module_key))
    # The failed attempts left nothing loaded.
    modules = json.loads(hsmsim(shared, VICTIM, "module", "list", "--json").stdout)
    assert all(m["objects"] == 0 for m in modules), modules
    r = hsmsim(shared, VICTIM, "key", "destroy", card_key, "--passphrase-file",
               passfile(shared, VICTIM, VICTIM_PASS))
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(key_file(shared, card_key))
    r = hsmsim(shared, VICTIM, "key", "destroy", module_key)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(key_file(shared, module_key))


# -- denial of service --------------------------------------------------------------

def test_a_huge_key_list_does_not_break_other_users(shared, victim_keys):
    # ATTACKER makes more keys, with the longest labels and CKA_IDs, than one
    # frame (1 MiB) can list; every listing still works for VICTIM.
    count = 1800
    attacker = Session(shared, ATTACKER)
    for i in range(count):
        r = attacker.call({"generate_key": {
            "module": 1 + i % 2, "type": "KEY_EC_P256", "persistent": True,
            "label": f"{i:06d}" + "L" * 250, "id": b64("ab" * 256)}})
        assert "generated" in r, r
        unloaded = attacker.call({"unload": {"module": 1 + i % 2,
                                             "handle": r["generated"]["handle"]}})
        assert "ok" in unloaded, unloaded
    attacker.close()

    r = hsmsim(shared, VICTIM, "key", "list", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    listed = json.loads(r.stdout)
    assert len(listed) == count + 2
    assert len(r.stdout) > 1024 * 1024  # more than a frame could hold
    labels = [k["label"] for k in listed]
    assert labels == sorted(labels), "key list is not in label order"
    assert {victim_keys["card"], victim_keys["module"]} <= {k["ident"] for k in listed}
    # C_Initialize lists every key: VICTIM's application still starts and signs.
    victim_signs(shared)


def test_keys_per_uid_are_bounded(machine):
    machine.start_service(extra=("--max-keys-per-uid", "3"))
    idents = [generate(machine, ATTACKER, f"a{i}", "module", key_id=None) for i in range(3)]
    r = hsmsim(machine, ATTACKER, "key", "generate", "--type", "ec-p256", "--label", "a4",
               "--protect", "module")
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--max-keys-per-uid 3" in r.stderr, r.stderr
    # Another user is not affected.
    generate(machine, VICTIM, "v1", "module", key_id=None)
    # The attacker's own keys count, so destroying one makes room again.
    r = hsmsim(machine, ATTACKER, "key", "destroy", idents[0])
    assert r.returncode == 0, r.stderr
    generate(machine, ATTACKER, "a5", "module", key_id=None)
