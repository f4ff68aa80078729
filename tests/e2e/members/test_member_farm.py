"""The member farm (tests/support/p11kit_members.py) does what it claims, seen
by real clients through p11-kit-client.so: each member serves its own token
holding the same keys, and kill/start, stop/cont, reinit_with_other_key,
add_member and close act as documented.

Clients are separate processes (CLIENT_SCRIPT, PyKCS11) so that a call that
blocks on a stopped server can be timed out and the client killed.

What p11-kit-client (0.24.1) does, as these tests show:
  - a server that is gone (killed): every call of a client that was
    connected returns CKR_DEVICE_ERROR (0x30), including C_GetSlotList, and
    keeps doing so after the server is started again: the client does not
    reconnect until C_Finalize + C_Initialize. A client initialized while
    the server is gone gets CKR_OK from C_Initialize and an empty slot list
    (no error), and also stays so after the server is back.
  - a stopped server (SIGSTOP): calls block with no timeout of their own,
    and complete as soon as the server is continued.
"""

import json
import os
import selectors
import subprocess
import sys
import time

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from p11kit_members import CLIENT_MODULE, KEYS, MemberFarm

PY = sys.executable
CALL_TIMEOUT_S = 10.0
BLOCK_S = 3.0        # how long a call must stay unanswered to count as blocked

# A PKCS#11 client of CLIENT_MODULE (address in P11_KIT_SERVER_ADDRESS). It
# reads one JSON command a line on stdin and answers each with one JSON line:
# {"ok": true, ...} or {"ok": false, "rv": "CKR_..."} (or "error" for
# anything else).
CLIENT_SCRIPT = r'''
import hashlib, json, sys
import PyKCS11

lib = PyKCS11.PyKCS11Lib()
state = {}

def hexid(value):
    return bytes(value).hex()

def do(cmd):
    op = cmd["op"]
    if op == "load":
        lib.load(cmd["module"])
        return {}
    if op in ("finalize", "initialize"):
        rv = getattr(lib.lib, "C_Finalize" if op == "finalize" else "C_Initialize")()
        if rv != PyKCS11.CKR_OK:
            raise PyKCS11.PyKCS11Error(rv)
        return {}
    if op == "tokens":
        out = []
        for slot in lib.getSlotList(tokenPresent=True):
            info = lib.getTokenInfo(slot)
            out.append({"label": info.label.strip(), "serial": info.serialNumber.strip()})
        return {"tokens": out}
    if op == "open":
        slot = lib.getSlotList(tokenPresent=True)[0]
        flags = PyKCS11.CKF_SERIAL_SESSION | PyKCS11.CKF_RW_SESSION
        state["session"] = lib.openSession(slot, flags)
        return {}
    session = state["session"]
    if op == "login":
        session.login(cmd["pin"])
        return {}
    if op == "objects":
        out = []
        for obj in session.findObjects([]):
            cls, oid, label = session.getAttributeValue(
                obj, [PyKCS11.CKA_CLASS, PyKCS11.CKA_ID, PyKCS11.CKA_LABEL])
            entry = {"class": PyKCS11.CKO[cls], "id": hexid(oid), "label": label}
            if cls == PyKCS11.CKO_PUBLIC_KEY:
                kt = session.getAttributeValue(obj, [PyKCS11.CKA_KEY_TYPE])[0]
                entry["type"] = PyKCS11.CKK[kt]
                attr = PyKCS11.CKA_EC_POINT if kt == PyKCS11.CKK_EC else PyKCS11.CKA_MODULUS
                entry["key"] = hexid(session.getAttributeValue(obj, [attr])[0])
            out.append(entry)
        return {"objects": out}
    if op == "sign":
        keys = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY),
                                    (PyKCS11.CKA_ID, bytes.fromhex(cmd["id"]))])
        if len(keys) != 1:
            return {"ok": False, "error": "%d private keys with id %s" % (len(keys), cmd["id"])}
        data = bytes.fromhex(cmd["data"])
        if cmd["type"] == "EC":
            # SoftHSM 2.6 has CKM_ECDSA but not CKM_ECDSA_SHA256: hash here.
            sig = session.sign(keys[0], hashlib.sha256(data).digest(),
                               PyKCS11.Mechanism(PyKCS11.CKM_ECDSA))
        else:
            sig = session.sign(keys[0], data, PyKCS11.Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS))
        return {"sig": hexid(sig)}
    raise ValueError("unknown op " + op)

for line in sys.stdin:
    cmd = json.loads(line)
    try:
        answer = dict({"ok": True}, **do(cmd))
    except PyKCS11.PyKCS11Error as e:
        answer = {"ok": False, "rv": PyKCS11.CKR.get(e.value, hex(e.value))}
    except Exception as e:
        answer = {"ok": False, "error": repr(e)}
    answer["op"] = cmd["op"]
    print(json.dumps(answer), flush=True)
'''


class Client:
    """A client process of CLIENT_MODULE talking to one member (the module
    loaded and initialized, i.e. connected, when the object is made)."""

    def __init__(self, member):
        env = dict(os.environ, **member.env)
        self.proc = subprocess.Popen([PY, "-c", CLIENT_SCRIPT], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.buffer = b""
        self.check("load", module=CLIENT_MODULE)

    def send(self, op, **args):
        self.proc.stdin.write((json.dumps(dict(args, op=op)) + "\n").encode())
        self.proc.stdin.flush()

    def receive(self, timeout=CALL_TIMEOUT_S):
        """The next answer, or None when none comes within `timeout`
        seconds (the call blocks)."""
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    return None
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"client exited {self.proc.wait()}")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def call(self, op, timeout=CALL_TIMEOUT_S, **args):
        """Runs one command; its answer (an AssertionError if none comes)."""
        self.send(op, **args)
        answer = self.receive(timeout)
        assert answer is not None, f"no answer to {op} within {timeout}s"
        return answer

    def check(self, op, **args):
        """Runs one command that must succeed; its answer."""
        answer = self.call(op, **args)
        assert answer["ok"], answer
        return answer

    def login(self, pin):
        self.check("open")
        self.check("login", pin=pin)
        return self

    def sign(self, key, data):
        """The signature of `data` by key `key` (a KEYS entry)."""
        return bytes.fromhex(self.check("sign", id=key["id"], type=key["type"],
                                        data=data.hex())["sig"])

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


@pytest.fixture
def clients():
    """Factory: clients(member) -> Client; every one is killed at the end."""
    made = []

    def make(member):
        made.append(Client(member))
        return made[-1]
    yield make
    for c in made:
        c.close()


EC_KEY = next(k for k in KEYS if k["name"] == "ec")
RSA_KEY = next(k for k in KEYS if k["name"] == "rsa")


def verifies(public_pem, key, data, sig):
    """Whether `sig` (as the token returns it) is a signature of `data` by
    `public_pem`: ECDSA P-256 over SHA-256 (r || s) or RSA PKCS#1 v1.5
    SHA-256."""
    public = serialization.load_pem_public_key(public_pem)
    try:
        if key["type"] == "EC":
            half = len(sig) // 2
            der = encode_dss_signature(int.from_bytes(sig[:half], "big"),
                                       int.from_bytes(sig[half:], "big"))
            public.verify(der, data, ec.ECDSA(hashes.SHA256()))
        else:
            public.verify(sig, data, padding.PKCS1v15(), hashes.SHA256())
        return True
    except InvalidSignature:
        return False


def signs_with(client, farm, key):
    """Whether a signature made by `client` with `key` verifies with the
    farm's shared public key."""
    data = os.urandom(48)
    return verifies(farm.public_key_pem(key["name"]), key, data, client.sign(key, data))


def expected_public_value(farm, key):
    """The CKA_EC_POINT (DER OCTET STRING of the uncompressed point) or the
    CKA_MODULUS of the shared public key `key`, hex."""
    public = serialization.load_pem_public_key(farm.public_key_pem(key["name"]))
    if key["type"] == "EC":
        point = public.public_bytes(serialization.Encoding.X962,
                                    serialization.PublicFormat.UncompressedPoint)
        return (bytes([0x04, len(point)]) + point).hex()
    n = public.public_numbers().n
    return n.to_bytes((n.bit_length() + 7) // 8, "big").hex()


def assert_serves_shared_keys(client, member, farm):
    """`client` sees exactly `member`'s token, and after login both key pairs
    of KEYS (private and public objects, right CKA_ID and label, the public
    key values of the shared keys)."""
    assert client.check("tokens")["tokens"] == [{"label": member.label, "serial": member.serial}]
    client.login(farm.pin)
    objects = client.check("objects")["objects"]
    seen = sorted((o["class"], o["id"], o["label"]) for o in objects)
    assert seen == sorted((cls, k["id"], k["label"]) for k in KEYS
                          for cls in ("CKO_PRIVATE_KEY", "CKO_PUBLIC_KEY"))
    for key in KEYS:
        public = [o for o in objects if o["class"] == "CKO_PUBLIC_KEY" and o["id"] == key["id"]][0]
        assert public["type"] == "CKK_" + key["type"]
        assert public["key"] == expected_public_value(farm, key)


def farm_processes(farm):
    """[(pid, command line)] of the live processes in /proc that belong to
    the farm: a command line naming one of its sockets, or SOFTHSM2_CONF in
    one of its member directories (p11-kit server and p11-kit-remote)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        conf = [e for e in environ if e.startswith(b"SOFTHSM2_CONF=" + farm.base_dir.encode())]
        sockets = [m.socket_path for m in farm.members if m.socket_path in cmdline]
        if conf or sockets:
            found.append((int(name), cmdline))
    return found


# -- tests -----------------------------------------------------------------------


def test_each_member_serves_its_own_token_with_both_keys(farm, clients):
    assert [m.name for m in farm.members] == ["hsm-a", "hsm-b", "hsm-c"]
    assert len({m.label for m in farm.members}) == 3
    assert len({m.serial for m in farm.members}) == 3
    assert len({m.address for m in farm.members}) == 3
    for member in farm.members:
        assert member.running()
        assert member.env == {"P11_KIT_SERVER_ADDRESS": member.address}
        assert member.address.startswith("unix:path=")
        assert len(member.address) - len("unix:path=") < 100
        assert_serves_shared_keys(clients(member), member, farm)


def test_every_member_signs_with_the_same_keys(farm, clients):
    for member in farm.members:
        client = clients(member).login(farm.pin)
        for key in (EC_KEY, RSA_KEY):
            assert signs_with(client, farm, key), (member.name, key["name"])


def test_kill_then_start(farm, clients):
    a = farm.member("hsm-a")
    old = clients(a).login(farm.pin)
    assert signs_with(old, farm, EC_KEY)

    a.kill()
    a.kill()                                   # idempotent
    assert not a.running()
    # The connected client: every call fails with CKR_DEVICE_ERROR.
    assert old.call("sign", id=EC_KEY["id"], type="EC", data="00") == \
        {"ok": False, "rv": "CKR_DEVICE_ERROR", "op": "sign"}
    assert old.call("tokens")["rv"] == "CKR_DEVICE_ERROR"
    # A new client: C_Initialize succeeds, and there is no slot at all.
    gone = clients(a)
    assert gone.check("tokens")["tokens"] == []
    # The other members do not notice.
    assert signs_with(clients(farm.member("hsm-b")).login(farm.pin), farm, EC_KEY)

    a.start()
    assert a.running()
    # Neither earlier client reconnects by itself ...
    assert old.call("tokens")["rv"] == "CKR_DEVICE_ERROR"
    assert gone.check("tokens")["tokens"] == []
    # ... until C_Finalize + C_Initialize; its old session handle is then
    # gone (SoftHSM in the new server knows no session yet).
    old.check("finalize")
    old.check("initialize")
    assert old.call("sign", id=EC_KEY["id"], type="EC", data="00")["rv"] == \
        "CKR_SESSION_HANDLE_INVALID"
    # A new client sees the same token and keys as before.
    fresh = clients(a)
    assert_serves_shared_keys(fresh, a, farm)
    for key in (EC_KEY, RSA_KEY):
        assert signs_with(fresh, farm, key)


def test_stop_blocks_calls_until_cont(farm, clients):
    b = farm.member("hsm-b")
    client = clients(b).login(farm.pin)
    assert signs_with(client, farm, RSA_KEY)

    b.stop()
    assert b.running()
    data = os.urandom(32)
    client.send("sign", id=RSA_KEY["id"], type="RSA", data=data.hex())
    sent = time.monotonic()
    # A new client blocks too (the kernel queues its connection): here
    # pkcs11-tool under timeout(1), killed after BLOCK_S, exit status 124.
    env = dict(os.environ, **b.env)
    tool = subprocess.run(["timeout", str(BLOCK_S), "pkcs11-tool", "--module", CLIENT_MODULE, "-L"],
                          env=env, capture_output=True)
    assert tool.returncode == 124, tool
    assert time.monotonic() - sent >= BLOCK_S
    assert client.receive(timeout=0.1) is None    # the sign call is still blocked
    # Meanwhile the other members answer.
    assert signs_with(clients(farm.member("hsm-c")).login(farm.pin), farm, RSA_KEY)

    b.cont()
    answer = client.receive()                 # the blocked call completes
    assert answer["ok"], answer
    assert verifies(farm.public_key_pem("rsa"), RSA_KEY, data, bytes.fromhex(answer["sig"]))
    assert signs_with(client, farm, EC_KEY)
    tool = subprocess.run(["pkcs11-tool", "--module", CLIENT_MODULE, "-L"], env=env,
                          capture_output=True, text=True, timeout=CALL_TIMEOUT_S)
    assert tool.returncode == 0 and b.serial in tool.stdout, tool


def test_reinit_with_other_key_replaces_only_that_key_on_that_member(farm, clients):
    a = farm.member("hsm-a")
    new_pem_path = a.reinit_with_other_key("ec")
    assert a.running()
    with open(new_pem_path[:-len(".pem")] + ".pub.pem", "rb") as f:
        new_public = f.read()
    assert new_public != farm.public_key_pem("ec")

    client = clients(a).login(farm.pin)
    objects = client.check("objects")["objects"]
    assert sorted((o["class"], o["id"], o["label"]) for o in objects) == sorted(
        (cls, k["id"], k["label"]) for k in KEYS for cls in ("CKO_PRIVATE_KEY", "CKO_PUBLIC_KEY"))
    data = os.urandom(40)
    sig = client.sign(EC_KEY, data)
    assert not verifies(farm.public_key_pem("ec"), EC_KEY, data, sig)
    assert verifies(new_public, EC_KEY, data, sig)
    assert signs_with(client, farm, RSA_KEY)
    ec_public = [o for o in objects if o["class"] == "CKO_PUBLIC_KEY" and o["id"] == EC_KEY["id"]]
    assert ec_public[0]["key"] != expected_public_value(farm, EC_KEY)

    for other in ("hsm-b", "hsm-c"):
        c = clients(farm.member(other)).login(farm.pin)
        assert signs_with(c, farm, EC_KEY), other
        assert signs_with(c, farm, RSA_KEY), other


def test_add_member_has_the_same_keys(farm, clients):
    d = farm.add_member("hsm-d")
    assert farm.member("hsm-d") is d
    assert [m.name for m in farm.members] == ["hsm-a", "hsm-b", "hsm-c", "hsm-d"]
    assert d.running()
    assert len({m.serial for m in farm.members}) == 4
    assert len({m.address for m in farm.members}) == 4
    client = clients(d)
    assert_serves_shared_keys(client, d, farm)
    for key in (EC_KEY, RSA_KEY):
        assert signs_with(client, farm, key)
    with pytest.raises(ValueError):
        farm.add_member("hsm-d")


def test_close_leaves_no_process(tmp_path, clients):
    farm = MemberFarm(str(tmp_path / "farm"))
    try:
        # Connections (a p11-kit-remote process each), one member stopped.
        for member in farm.members:
            clients(member).login(farm.pin)
        farm.member("hsm-c").stop()
        before = farm_processes(farm)
        assert len(before) >= 6, before      # 3 servers + 3 connections
        assert sorted(pid for pid, _ in before) == sorted(farm.pids())
    finally:
        farm.close()
    assert farm_processes(farm) == []
    assert [m.running() for m in farm.members] == [False] * 3
    farm.close()                                # idempotent
    assert farm_processes(farm) == []


def test_long_base_dir_puts_sockets_under_tmp(tmp_path):
    base = tmp_path / ("x" * 80) / "farm"
    with MemberFarm(str(base), names=("hsm-a",)) as farm:
        member = farm.member("hsm-a")
        assert len(member.socket_path) < 100
        assert not member.socket_path.startswith(str(tmp_path))
        assert os.path.exists(member.socket_path)
        socket_dir = os.path.dirname(member.socket_path)
    assert not os.path.exists(socket_dir)
    assert farm_processes(farm) == []
