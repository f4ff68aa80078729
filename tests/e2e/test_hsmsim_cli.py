"""End-to-end tests of `hsmsim`: the service (`hsmsim serve`) and its admin
CLI, driven as an operator would, against the contracts of hsmsim(1).

Each test starts its own service in its own directory (see conftest.py), so
the tests are independent and parallel-safe.
"""

import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import threading
import time

import pexpect
import pytest

from conftest import snapshot_dir

HEX40 = re.compile(r"^[0-9a-f]{40}$")

# --type -> (openssl key kind, bits reported by `key list`)
KEY_TYPES = {
    "rsa-2048": ("rsa", 2048),
    "rsa-3072": ("rsa", 3072),
    "rsa-4096": ("rsa", 4096),
    "ec-p256": ("ec", 256),
    "ec-p384": ("ec", 384),
    "aes-128": ("aes", 128),
    "aes-256": ("aes", 256),
}
EC_CURVE = {256: "prime256v1", 384: "secp384r1"}


# ---- helpers -------------------------------------------------------------------

def one_line(text):
    """Asserts `text` is exactly one non-empty line (a one-line message)."""
    lines = [line for line in text.strip("\n").split("\n")]
    assert len(lines) == 1 and lines[0].strip(), f"expected a one-line message, got {text!r}"
    return lines[0]


def create_softcard(sim, name, passphrase, kind="softcard"):
    pf = sim.passfile(passphrase)
    r = sim.ok(kind, "create", name, "--passphrase-file", pf)
    m = re.fullmatch(rf"created {kind} {re.escape(name)} \(hash ([0-9a-f]{{40}})\)\n?", r.stdout)
    assert m, f"unexpected output of {kind} create: {r.stdout!r}"
    assert passphrase not in r.stdout + r.stderr
    return m.group(1)


def generate(sim, ktype, label, protect, passphrase=None, key_id=None):
    args = ["key", "generate", "--type", ktype, "--label", label, "--protect", protect]
    if key_id is not None:
        args += ["--id", key_id]
    if passphrase is not None:
        args += ["--passphrase-file", sim.passfile(passphrase)]
    r = sim.ok(*args)
    m = re.fullmatch(
        rf"generated {re.escape(ktype)} key '{re.escape(label)}' \(ident ([0-9a-f]{{40}})\) "
        rf"protected by {re.escape(protect)}\n?", r.stdout)
    assert m, f"unexpected output of key generate: {r.stdout!r}"
    if passphrase:
        assert passphrase not in r.stdout + r.stderr
    return m.group(1)


def keys_by_ident(sim):
    return {k["ident"]: k for k in sim.json("key", "list")}


def openssl_pubkey_text(pem):
    r = subprocess.run(["openssl", "pkey", "-pubin", "-noout", "-text"], input=pem,
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"openssl cannot read public_key_pem: {r.stderr}\n{pem}"
    return r.stdout


# Minimal protobuf reader/writer, enough for the handshake and error replies
# (no protobuf package for python on the machine; the schema is src/wire/wire.proto).
def pb_varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def pb_field(num, value):
    if isinstance(value, int):
        return pb_varint(num << 3) + pb_varint(value)
    return pb_varint((num << 3) | 2) + pb_varint(len(value)) + value


def pb_parse(data):
    """{field: [values]} (ints for varints, bytes for length-delimited)."""
    fields, i = {}, 0
    while i < len(data):
        key, shift = 0, 0
        while True:
            b = data[i]; i += 1
            key |= (b & 0x7F) << shift; shift += 7
            if not b & 0x80:
                break
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, shift = 0, 0
            while True:
                b = data[i]; i += 1
                v |= (b & 0x7F) << shift; shift += 7
                if not b & 0x80:
                    break
        elif wt == 2:
            ln, shift = 0, 0
            while True:
                b = data[i]; i += 1
                ln |= (b & 0x7F) << shift; shift += 7
                if not b & 0x80:
                    break
            v = data[i:i + ln]; i += ln
        elif wt == 1:
            v = data[i:i + 8]; i += 8
        elif wt == 5:
            v = data[i:i + 4]; i += 4
        else:
            raise ValueError(f"wire type {wt}")
        fields.setdefault(num, []).append(v)
    return fields


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


PROTOCOL_VERSION = 4  # kProtocolVersion in src/wire/include/wire/codec.hpp


def hello_request(version=PROTOCOL_VERSION, req_id=1):
    return pb_field(1, req_id) + pb_field(10, pb_field(1, version) + pb_field(2, b"e2e"))


def raw_connect(path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def read_outcome(s, timeout=5.0):
    """What the server does next on `s`: ("closed", b""), ("frame", payload) or
    ("silent", partial bytes) when nothing complete came within `timeout`."""
    s.settimeout(timeout)
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while True:
            if len(buf) >= 4:
                (n,) = struct.unpack(">I", buf[:4])
                if len(buf) >= 4 + n:
                    return ("frame", buf[4:4 + n])
            s.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = s.recv(65536)
            if not chunk:
                return ("closed", buf)
            buf += chunk
    except (ConnectionResetError, BrokenPipeError):
        return ("closed", buf)
    except socket.timeout:
        return ("silent", buf)


def response_of(payload):
    """The Response fields of a ServerMessage payload."""
    msg = pb_parse(payload)
    assert 1 in msg, f"expected a ServerMessage.response, got fields {sorted(msg)}"
    return pb_parse(msg[1][0])


def assert_error_or_close(s, what):
    kind, data = read_outcome(s)
    if kind == "frame":
        resp = response_of(data)
        assert 10 in resp, f"{what}: the reply is not an error (fields {sorted(resp)})"
    else:
        assert kind == "closed", f"{what}: no error reply and the connection stays open"


# ---- the ready line, files and modes ----------------------------------------------

def test_ready_line_names_modules_world_and_sockets(make_service):
    sim = make_service(modules=3)
    assert int(sim.ready.group("modules")) == 3
    assert re.fullmatch(r"[0-9a-f]+", sim.world_id)
    assert sim.ready.group("socket") == sim.socket
    assert sim.ready.group("admin") == sim.admin_socket
    assert len(sim.stdout_lines) == 1, f"more than the ready line on stdout: {sim.stdout_lines}"
    mods = sim.modules()
    assert sorted(mods) == [1, 2, 3]
    assert all(m["state"] == "usable" for m in mods.values()), mods
    assert len({m["esn"] for m in mods.values()}) == 3, "ESNs are not distinct"


def test_serve_takes_paths_from_options(make_service):
    # Same as the env defaults, but with --kmdata/--socket/--admin-socket and an
    # environment that points elsewhere.
    sim = make_service(start=False)
    env = sim.env
    env["NFAST_KMDATA"] = "/nonexistent/km"
    env["HSMSIM_SOCKET"] = "/nonexistent/c.sock"
    env["HSMSIM_ADMIN_SOCKET"] = "/nonexistent/a.sock"
    sim.start(env=env, extra=["--kmdata", sim.kmdata, "--socket", sim.socket,
                              "--admin-socket", sim.admin_socket])
    assert sim.ready.group("socket") == sim.socket
    assert os.path.exists(os.path.join(sim.kmdata, "world"))
    sim.ok("softcard", "list")


def test_socket_and_world_file_modes(service):
    assert stat.S_ISSOCK(os.stat(service.socket).st_mode)
    assert stat.S_IMODE(os.stat(service.socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(service.admin_socket).st_mode) == 0o600
    world = os.path.join(service.kmdata, "world")
    assert stat.S_IMODE(os.stat(world).st_mode) == 0o600
    for name in ("world", "modules"):
        with open(os.path.join(service.kmdata, name)) as f:
            json.load(f)  # the world files are JSON


def test_module_list_fields(make_service):
    sim = make_service(modules=2, op_latency_ms=7)
    mods = sim.json("module", "list")
    assert [m["number"] for m in mods] == [1, 2]
    for m in mods:
        for field in ("number", "esn", "state", "generation", "latency_ms", "ops",
                      "ops_failed", "objects", "fail_next"):
            assert field in m, f"module list --json lacks {field}: {m}"
        assert m["state"] == "usable"
        assert m["latency_ms"] == 7, "--op-latency-ms is not the modules' initial latency"
        assert m["fail_next"] == 0
    sim.ok("module", "list")  # the human form works too


# ---- softcards and card sets --------------------------------------------------------

@pytest.mark.parametrize("kind", ["softcard", "cardset"])
def test_token_create_and_list(service, kind):
    pw = "correct-horse-e2e"
    h1 = create_softcard(service, "alpha", pw, kind)
    h2 = create_softcard(service, "beta", pw + "2", kind)
    assert h1 != h2
    listed = service.json(kind, "list")
    assert {"type": kind, "name": "alpha", "hash": h1} in listed, listed
    assert {"type": kind, "name": "beta", "hash": h2} in listed, listed
    assert all(t["type"] == kind for t in listed)
    human = service.ok(kind, "list").stdout
    assert "alpha" in human and "beta" in human
    for h in (h1, h2):
        path = os.path.join(service.kmdata, f"card_{h}")
        assert os.path.isfile(path), f"no world file card_{h}"
        with open(path) as f:
            json.load(f)
    # The passphrase is nowhere in the world files or the service log.
    for name, (_, data) in snapshot_dir(service.kmdata).items():
        assert pw.encode() not in (data or b""), f"the passphrase is in {name}"
    assert pw not in service.log()


def test_duplicate_softcard_refused(service):
    h = create_softcard(service, "dup", "pw1")
    before = snapshot_dir(service.kmdata)
    r = service.run("softcard", "create", "dup", "--passphrase-file", service.passfile("pw2"))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    one_line(r.stderr)
    assert snapshot_dir(service.kmdata) == before
    assert [t["hash"] for t in service.json("softcard", "list") if t["name"] == "dup"] == [h]


def test_passphrase_file_loses_one_trailing_newline_only(service):
    create_softcard(service, "nl", "secret-nl\n")      # passphrase: "secret-nl"
    generate(service, "ec-p256", "k-nl", "softcard:nl", passphrase="secret-nl")
    generate(service, "ec-p256", "k-nl2", "softcard:nl", passphrase="secret-nl\n")
    r = service.run("key", "generate", "--type", "ec-p256", "--label", "k-nl3",
                    "--protect", "softcard:nl",
                    "--passphrase-file", service.passfile("secret-nl\n\n"))
    assert r.returncode == 1, "two trailing newlines: only one is removed, so it is wrong"


def test_passphrase_file_loses_a_windows_line_ending_too(service):
    # "\r\n" is one line ending (a file edited on Windows): the passphrase
    # is what comes before it, as with "\n".
    create_softcard(service, "crlf", "secret-crlf\r\n")   # passphrase: "secret-crlf"
    generate(service, "ec-p256", "k-crlf", "softcard:crlf", passphrase="secret-crlf")
    generate(service, "ec-p256", "k-crlf2", "softcard:crlf", passphrase="secret-crlf\n")
    r = service.run("key", "generate", "--type", "ec-p256", "--label", "k-crlf3",
                    "--protect", "softcard:crlf",
                    "--passphrase-file", service.passfile("secret-crlf\r"))
    assert r.returncode == 1, "a lone carriage return is not a line ending: it is wrong"


def test_softcard_create_prompts_on_a_tty_without_echo(service):
    secret = "tty-secret-e2e"
    child = pexpect.spawn(service.bin, ["softcard", "create", "ttycard"], env=service.env,
                          timeout=10, encoding="utf-8")
    child.expect(r"(?i)passphrase")
    child.sendline(secret)
    while True:
        i = child.expect([r"(?i)passphrase|again|confirm|repeat|retype",
                          r"created softcard ttycard \(hash [0-9a-f]{40}\)"])
        if i == 1:
            break
        child.sendline(secret)  # confirmation prompt
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    # Nothing echoed: the terminal never showed the passphrase.
    assert secret not in (child.before or "")
    # The prompt read the passphrase without its newline.
    generate(service, "ec-p256", "tty-k", "softcard:ttycard", passphrase=secret)


def test_softcard_create_without_tty_or_file_fails_cleanly(service):
    before = snapshot_dir(service.kmdata)
    r = subprocess.run([service.bin, "softcard", "create", "notty"], env=service.env,
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    one_line(r.stderr)
    assert snapshot_dir(service.kmdata) == before
    assert "notty" not in [t["name"] for t in service.json("softcard", "list")]


def test_wrong_passphrase_refused_and_world_unchanged(service):
    good, bad = "right-pass-e2e", "wrong-pass-e2e"
    create_softcard(service, "sc", good)
    before = snapshot_dir(service.kmdata)
    objects_before = {n: m["objects"] for n, m in service.modules().items()}
    r = service.run("key", "generate", "--type", "ec-p256", "--label", "nope",
                    "--protect", "softcard:sc", "--passphrase-file", service.passfile(bad))
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    msg = one_line(r.stderr)
    assert "passphrase" in msg.lower(), f"the message does not say what is wrong: {msg!r}"
    assert bad not in r.stdout + r.stderr and good not in r.stdout + r.stderr
    assert r.stdout == ""
    assert snapshot_dir(service.kmdata) == before, "a refused operation changed the world"
    assert {n: m["objects"] for n, m in service.modules().items()} == objects_before, \
        "a wrong passphrase left objects loaded"
    assert [k for k in service.json("key", "list") if k["label"] == "nope"] == []
    assert bad not in service.log()


def test_unknown_softcard_is_not_found(service):
    r = service.run("key", "generate", "--type", "ec-p256", "--label", "x",
                    "--protect", "softcard:ghost", "--passphrase-file", service.passfile("p"))
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "ghost" in one_line(r.stderr)


# ---- keys -------------------------------------------------------------------------

@pytest.mark.parametrize("protect", ["module", "softcard"])
@pytest.mark.parametrize("ktype", list(KEY_TYPES))
def test_key_generate_and_list(make_service, ktype, protect):
    sim = make_service(modules=1)
    token_hash, passphrase, protection = "", None, "module"
    if protect == "softcard":
        passphrase = "kpass-e2e"
        token_hash = create_softcard(sim, "ks", passphrase)
        protection = "softcard:ks"
    ident = generate(sim, ktype, f"lbl-{ktype}", protection, passphrase, key_id="0A1b2c")
    assert HEX40.match(ident)
    keys = keys_by_ident(sim)
    assert ident in keys, keys
    k = keys[ident]
    for field in ("ident", "label", "id", "type", "bits", "protection", "token_hash",
                  "public_key_pem"):
        assert field in k, f"key list --json lacks {field}: {k}"
    kind, bits = KEY_TYPES[ktype]
    assert k["label"] == f"lbl-{ktype}"
    assert k["id"].lower() == "0a1b2c"
    assert k["type"] == ktype
    assert k["bits"] == bits
    assert k["protection"] == protection
    assert k["token_hash"] == token_hash
    if kind == "aes":
        assert k["public_key_pem"] == ""
    else:
        pem = k["public_key_pem"]
        assert pem.startswith("-----BEGIN PUBLIC KEY-----"), pem
        text = openssl_pubkey_text(pem)
        assert f"({bits} bit)" in text, text
        if kind == "ec":
            assert EC_CURVE[bits] in text or f"P-{bits}" in text, text
        else:
            assert "Modulus" in text
    key_file = os.path.join(sim.kmdata, f"key_{ident}")
    assert os.path.isfile(key_file), "a persistent key has no key_<ident> file"
    with open(key_file, "rb") as f:
        data = f.read()
    json.loads(data)
    if passphrase:
        assert passphrase.encode() not in data


def test_key_generate_with_cardset_protection(service):
    h = create_softcard(service, "cs", "cs-pass", kind="cardset")
    ident = generate(service, "rsa-2048", "cs-key", "cardset:cs", "cs-pass")
    k = keys_by_ident(service)[ident]
    assert k["protection"] == "cardset:cs"
    assert k["token_hash"] == h


def test_key_delete(service):
    create_softcard(service, "dk", "dk-pass")
    token_key = generate(service, "ec-p256", "dk-token", "softcard:dk", "dk-pass")
    module_key = generate(service, "ec-p256", "dk-module", "module")
    before = snapshot_dir(service.kmdata)
    # A token's key needs the token's passphrase.
    r = service.run("key", "delete", token_key, "--passphrase-file", service.passfile("nope"))
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "passphrase" in one_line(r.stderr).lower()
    # A module-protected key takes no passphrase.
    r = service.run("key", "delete", module_key, "--passphrase-file", service.passfile("x"))
    assert r.returncode == 2, (r.returncode, r.stderr)
    one_line(r.stderr)
    r = service.run("key", "delete", "0" * 40)
    assert r.returncode == 1 and "no key" in one_line(r.stderr), r.stderr
    assert snapshot_dir(service.kmdata) == before
    assert all(m["objects"] == 0 for m in service.modules().values()), "a token left loaded"

    r = service.ok("key", "delete", token_key, "--passphrase-file", service.passfile("dk-pass"))
    assert r.stdout == f"deleted key 'dk-token' (ident {token_key}) protected by softcard dk\n"
    # "destroy", its former name, is the same command.
    r = service.ok("key", "destroy", module_key)
    assert r.stdout == f"deleted key 'dk-module' (ident {module_key})\n"
    assert not ({token_key, module_key} & set(keys_by_ident(service)))
    assert not os.path.exists(os.path.join(service.kmdata, f"key_{token_key}"))
    assert all(m["objects"] == 0 for m in service.modules().values()), "a token left loaded"


def test_keys_listed_without_id_have_empty_id(service):
    ident = generate(service, "ec-p256", "noid", "module")
    assert keys_by_ident(service)[ident]["id"] == ""
    human = service.ok("key", "list").stdout
    assert "noid" in human


# ---- usage errors and exit statuses -----------------------------------------------------

USAGE_ERRORS = {
    "unknown-option": ["key", "list", "--bogus"],
    "unknown-command": ["frobnicate"],
    "bad-type": ["key", "generate", "--type", "rsa-1000", "--label", "x", "--protect", "module"],
    "bad-id-hex": ["key", "generate", "--type", "ec-p256", "--label", "x", "--id", "zz",
                   "--protect", "module"],
    "missing-label": ["key", "generate", "--type", "ec-p256", "--protect", "module"],
    "bad-protect": ["key", "generate", "--type", "ec-p256", "--label", "x", "--protect", "bogus"],
    "module-not-a-number": ["module", "clear", "abc"],
    "latency-missing-ms": ["module", "latency", "1"],
    "delete-bad-ident": ["key", "delete", "not-an-ident"],
    "delete-missing-ident": ["key", "delete"],
    "destroy-missing-ident": ["key", "destroy"],
    "softcard-delete-missing-name": ["softcard", "delete"],
    "cardset-delete-unknown-option": ["cardset", "delete", "x", "--with-key"],
    "max-keys-zero": ["serve", "--max-keys-per-uid", "0"],
    "max-world-too-large": ["serve", "--max-world-mib", "65537"],
}


@pytest.mark.parametrize("name", list(USAGE_ERRORS))
def test_usage_errors_exit_2_with_one_line(service, name):
    before = snapshot_dir(service.kmdata)
    r = service.run(*USAGE_ERRORS[name])
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    one_line(r.stderr)
    assert r.stdout == ""
    assert snapshot_dir(service.kmdata) == before


def test_usage_error_is_reported_before_connecting(make_service):
    sim = make_service(start=False)  # nothing listens: usage still wins (2, not 3)
    r = sim.run(*USAGE_ERRORS["bad-type"])
    assert r.returncode == 2, (r.returncode, r.stderr)


@pytest.mark.parametrize("args,which", [
    (["softcard", "list"], "socket"),
    (["key", "list"], "socket"),
    (["key", "generate", "--type", "ec-p256", "--label", "x", "--protect", "module"], "socket"),
    (["module", "clear", "1"], "admin"),
    (["module", "add"], "admin"),
    (["module", "list"], "either"),
])
def test_unreachable_service_exits_3_naming_the_socket(make_service, args, which):
    sim = make_service(start=False)
    r = sim.run(*args)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    msg = one_line(r.stderr)
    if which == "socket":
        assert sim.socket in msg, msg
    elif which == "admin":
        assert sim.admin_socket in msg, msg
    else:
        assert sim.socket in msg or sim.admin_socket in msg, msg


def test_stale_socket_file_is_unreachable(make_service):
    sim = make_service(start=False)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(sim.socket)
    s.close()  # the file stays, nobody listens
    r = sim.run("softcard", "list")
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert sim.socket in one_line(r.stderr)


def test_a_listener_that_never_answers_is_unreachable(make_service):
    # Something accepts connections at the socket but never answers (a hung
    # or stopped service): hsmsim gives up after its 10 s request timeout.
    sim = make_service(start=False)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(sim.socket)
        s.listen(8)
        started = time.monotonic()
        r = sim.run("softcard", "list")
        took = time.monotonic() - started
    finally:
        s.close()
    assert r.returncode == 3, (r.returncode, r.stderr)
    msg = one_line(r.stderr)
    assert sim.socket in msg and "cannot reach" in msg and "did not answer" in msg, msg
    assert took < 20, took


@pytest.mark.parametrize("position", ["after-command", "before-command"])
def test_cli_socket_options_override_environment(service, position):
    env = service.env
    env["HSMSIM_SOCKET"] = "/nonexistent/c.sock"
    env["HSMSIM_ADMIN_SOCKET"] = "/nonexistent/a.sock"
    opts = ["--socket", service.socket, "--admin-socket", service.admin_socket]
    for cmd in (["softcard", "list"], ["module", "latency", "1", "3"]):
        argv = cmd + opts if position == "after-command" else opts + cmd
        r = service.run(*argv, env=env)
        assert r.returncode == 0, (argv, r.returncode, r.stderr)
    assert service.modules()[1]["latency_ms"] == 3


# ---- fault injection ----------------------------------------------------------------

def test_clear_bumps_generation_then_initialising_until_usable(make_service):
    delay = 1.0  # long enough to see "initialising" even on a loaded (or ASan) machine
    sim = make_service(modules=2, init_delay_ms=int(delay * 1000))
    before = sim.modules()
    t0 = time.monotonic()
    sim.ok("module", "clear", "1")
    m = sim.modules()[1]
    assert m["generation"] == before[1]["generation"] + 1
    assert m["objects"] == 0
    assert m["state"] == "initialising", m
    assert sim.modules()[2] == before[2], "clearing module 1 touched module 2"
    m = sim.wait_module(1, "usable", timeout=5)
    assert time.monotonic() - t0 >= delay * 0.9, "usable before the init delay"
    assert m["generation"] == before[1]["generation"] + 1


def test_fail_restore_remove_add(make_service):
    sim = make_service(modules=2, init_delay_ms=150)
    g0 = sim.modules()[2]["generation"]
    sim.ok("module", "fail", "2")
    m = sim.modules()[2]
    assert m["state"] == "failed" and m["generation"] == g0
    sim.ok("module", "restore", "2")
    m = sim.modules()[2]
    assert m["generation"] == g0 + 1, "restore does not bump the generation"
    assert m["state"] in ("initialising", "usable")
    sim.wait_module(2, "usable")
    sim.ok("module", "remove", "2")
    assert sim.modules()[2]["state"] == "removed"
    r = sim.ok("module", "add")
    assert re.fullmatch(r"\d+\n?", r.stdout), f"module add printed {r.stdout!r}"
    n = int(r.stdout)
    assert n == 3
    mods = sim.modules()
    assert mods[n]["state"] in ("initialising", "usable")
    assert len({m["esn"] for m in mods.values()}) == len(mods), "ESNs are not distinct"
    sim.wait_module(n, "usable")
    # Module 1 never moved.
    assert mods[1]["state"] == "usable"
    # Persisted enrolment: `modules` is still valid JSON.
    with open(os.path.join(sim.kmdata, "modules")) as f:
        json.load(f)


@pytest.mark.parametrize("args", [["module", "clear", "99"], ["module", "latency", "99", "5"],
                                  ["module", "fail-next", "99", "1"]])
def test_fault_injection_on_unknown_module_fails(service, args):
    # A well-formed command about a module that does not exist: the operation
    # failed (not found), exit 1; 2 is for malformed command lines.
    r = service.run(*args)
    assert r.returncode == 1, (args, r.returncode, r.stderr)
    assert "99" in one_line(r.stderr)


def test_refused_module_transition_fails(service):
    # Restoring a module that is usable, failing a removed one: the command
    # line is right, the operation is refused in this state: exit 1.
    r = service.run("module", "restore", "1")
    assert r.returncode == 1, (r.returncode, r.stderr)
    one_line(r.stderr)
    service.ok("module", "remove", "2")
    r = service.run("module", "fail", "2")
    assert r.returncode == 1, (r.returncode, r.stderr)
    one_line(r.stderr)


def test_latency_and_fail_next_visible(service):
    service.ok("module", "latency", "1", "25")
    service.ok("module", "fail-next", "2", "3")
    mods = service.modules()
    assert mods[1]["latency_ms"] == 25 and mods[2]["latency_ms"] == 0
    assert mods[2]["fail_next"] == 3 and mods[1]["fail_next"] == 0


# ---- service lifecycle -------------------------------------------------------------------

def test_ready_notified_to_systemd(make_service):
    sim = make_service(start=False)
    path = os.path.join(sim.root, "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(path)
    n.settimeout(10)
    try:
        env = sim.env
        env["NOTIFY_SOCKET"] = path
        sim.start(env=env)  # waits for the ready line
        msgs = []
        while True:
            data = n.recv(4096).decode()
            msgs.append(data)
            if "READY=1" in data.split("\n"):
                break
        # Both sockets listen once READY=1 was sent.
        sim.ok("module", "list")
        sim.ok("softcard", "list")
    finally:
        n.close()


def test_ready_notified_to_abstract_notify_socket(make_service):
    # sd_notify(3): a NOTIFY_SOCKET starting with '@' is in the abstract namespace.
    sim = make_service(start=False)
    name = "@" + os.path.basename(sim.root) + "-notify"
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind("\0" + name[1:])
    n.settimeout(10)
    try:
        env = sim.env
        env["NOTIFY_SOCKET"] = name
        sim.start(env=env)
        while "READY=1" not in n.recv(4096).decode().split("\n"):
            pass
    finally:
        n.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_keeps_world_for_next_start(make_service, sig):
    sim = make_service(modules=2)
    world = sim.world_id
    h = create_softcard(sim, "keep", "keep-pass")
    k1 = generate(sim, "ec-p256", "keep-ec", "module")
    k2 = generate(sim, "rsa-2048", "keep-rsa", "softcard:keep", "keep-pass")
    tokens = sim.json("softcard", "list")
    keys = sim.json("key", "list")
    files = snapshot_dir(sim.kmdata, ignore=(".lock",))
    assert sim.stop(sig) == 0  # and both sockets removed (checked by stop)
    assert snapshot_dir(sim.kmdata, ignore=(".lock",)) == files, \
        "stopping changed the world files"
    sim.start(modules=2)
    assert sim.world_id == world, "a restart on the same world shows another world id"
    assert sim.json("softcard", "list") == tokens
    assert sim.json("key", "list") == keys
    assert {k1, k2} <= set(keys_by_ident(sim))
    # The stored softcard still works with its passphrase.
    generate(sim, "ec-p256", "after-restart", "softcard:keep", "keep-pass")
    assert any(t["hash"] == h for t in sim.json("softcard", "list"))


def test_restart_keeps_added_modules(make_service):
    sim = make_service(modules=2, init_delay_ms=50)
    assert sim.ok("module", "add").stdout.strip() == "3"
    esns = {n: m["esn"] for n, m in sim.modules().items()}
    sim.stop()
    sim.start(modules=2, init_delay_ms=50)
    assert int(sim.ready.group("modules")) == 3, sim.ready.group(0)
    assert {n: m["esn"] for n, m in sim.modules().items()} == esns


def test_restart_after_a_crash(make_service):
    # SIGKILL leaves the socket files behind; the next start must take them
    # over (nobody listens on them) and serve the same world.
    sim = make_service(modules=1)
    world = sim.world_id
    create_softcard(sim, "crash", "crash-pass")
    sim.proc.kill()
    sim.proc.wait()
    sim.proc = None
    sim.start(modules=1)
    assert sim.world_id == world
    assert [t["name"] for t in sim.json("softcard", "list")] == ["crash"]


def test_stop_with_busy_clients_and_pending_init(make_service):
    # SIGTERM while clients are connected (one mid-frame) and a module is
    # initialising: still a prompt, clean exit 0 (checked by stop()).
    sim = make_service(modules=2, init_delay_ms=5000)
    held = [raw_connect(sim.socket), raw_connect(sim.admin_socket)]
    held[0].sendall(frame(hello_request()))
    held[1].sendall(b"\x00\x00\x01")
    sim.ok("module", "clear", "1")
    t0 = time.monotonic()
    assert sim.stop() == 0
    assert time.monotonic() - t0 < 3, "SIGTERM waited for the init delay or the clients"
    for s in held:
        s.close()


def test_serve_creates_missing_world_directory(make_service):
    sim = make_service(start=False)
    os.rmdir(sim.kmdata)
    sim.start(modules=1)
    assert os.path.isfile(os.path.join(sim.kmdata, "world"))


NOBODY = 65534  # a user other than root, whatever the machine has


def _serve_refused(sim, *extra, env=None):
    """`hsmsim serve ARGS` exits 1 with one line; returns the line."""
    r = sim.run("serve", "--modules", "1", *extra, env=env, timeout=15)
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    return one_line(r.stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="root writing into another user's directory")
def test_serve_as_root_writes_nothing_in_another_users_directory(make_service):
    sim = make_service(start=False)
    name = "nobody"
    try:
        import pwd
        name = pwd.getpwuid(NOBODY).pw_name
    except KeyError:
        name = None
    fix = f"runuser -u {name} -- hsmsim serve" if name else f"uid {NOBODY}"

    # The world directory of another user (the packaged service's, say).
    os.chown(sim.kmdata, NOBODY, NOBODY)
    line = _serve_refused(sim)
    assert line.startswith(f"hsmsim: the Security World directory {sim.kmdata} belongs to uid "
                           f"{NOBODY}"), line
    assert fix in line and "NFAST_KMDATA or --kmdata" in line, line
    assert os.listdir(sim.kmdata) == []

    # A missing one, to be made in a directory of another user.
    theirs = os.path.join(sim.root, "theirs")
    os.mkdir(theirs, 0o700)
    os.chown(theirs, NOBODY, NOBODY)
    kmdata = os.path.join(theirs, "a", "kmdata")
    line = _serve_refused(sim, "--kmdata", kmdata)
    assert f"the Security World directory {kmdata} would be made in {theirs}, which belongs " \
           f"to uid {NOBODY}" in line and fix in line, line
    assert os.listdir(theirs) == []

    # A socket directory of another user: refused before the world is made.
    mine = os.path.join(sim.root, "mine")
    line = _serve_refused(sim, "--kmdata", mine, "--socket", os.path.join(theirs, "c.sock"))
    assert f"the client socket's directory {theirs} belongs to uid {NOBODY}" in line, line
    assert "HSMFLEET_SOCKET or --socket" in line, line
    assert not os.path.exists(mine)
    line = _serve_refused(sim, "--kmdata", mine,
                          "--admin-socket", os.path.join(theirs, "s", "a.sock"))
    assert "the admin socket's directory" in line and "HSMFLEET_ADMIN_SOCKET" in line, line
    assert not os.path.exists(mine) and os.listdir(theirs) == []

    # Root's own directories are served as before.
    os.chown(sim.kmdata, 0, 0)
    sim.start(modules=1)


def test_serve_refuses_a_directory_that_is_not_a_world(make_service):
    sim = make_service(start=False)
    stray = os.path.join(sim.kmdata, "notes.txt")
    with open(stray, "w") as f:
        f.write("not a world\n")
    log = _expect_refused(sim, "a non-empty directory that is not a world")
    assert sim.kmdata in log, log
    assert sorted(os.listdir(sim.kmdata)) in (["notes.txt"], [".lock", "notes.txt"]), \
        os.listdir(sim.kmdata)


def _expect_refused(sim, what):
    since = sim.log_size()
    p = sim.start(expect_ready=False)
    try:
        rc = p.wait(5)
    except subprocess.TimeoutExpired:
        sim.kill()
        pytest.fail(f"a second serve on {what} kept running")
    assert rc != 0, f"a second serve on {what} exited 0"
    log = sim.log(since).strip()
    assert log, f"serve on {what} failed without a message"
    return log


def test_second_serve_on_same_world_refused(make_service):
    first = make_service(modules=2)
    create_softcard(first, "w", "w-pass")
    files = snapshot_dir(first.kmdata)
    second = make_service(kmdata=first.kmdata, start=False)
    log = _expect_refused(second, "the same world")
    assert first.kmdata in log, f"the message does not name the world: {log!r}"
    assert not os.path.exists(second.socket) and not os.path.exists(second.admin_socket), \
        "the refused serve left socket files"
    assert first.running()
    assert [t["name"] for t in first.json("softcard", "list")] == ["w"]
    first.ok("module", "list")
    assert snapshot_dir(first.kmdata) == files


@pytest.mark.parametrize("which", ["socket", "admin_socket"])
def test_second_serve_on_same_live_socket_refused(make_service, which):
    first = make_service(modules=1)
    second = make_service(start=False)  # its own world
    setattr(second, which, getattr(first, which))
    log = _expect_refused(second, f"the live {which}")
    assert getattr(first, which) in log, f"the message does not name the socket: {log!r}"
    assert os.path.exists(first.socket) and os.path.exists(first.admin_socket), \
        "the refused serve removed the first one's socket"
    assert first.running()
    first.ok("softcard", "list")
    first.ok("module", "list")


def test_corrupt_card_file_named_and_others_listed(make_service):
    sim = make_service(modules=1)
    ha = create_softcard(sim, "aaa", "pa")
    hb = create_softcard(sim, "bbb", "pb")
    sim.stop()
    bad = os.path.join(sim.kmdata, f"card_{ha}")
    with open(bad, "wb") as f:
        f.write(b'{"name": "aaa", "hash": ')  # truncated JSON
    others = snapshot_dir(sim.kmdata)
    since = sim.log_size()
    sim.start(modules=1)
    r = sim.run("softcard", "list", "--json")
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    listed = json.loads(r.stdout)
    assert {"type": "softcard", "name": "bbb", "hash": hb} in listed, listed
    assert f"card_{ha}" in sim.log(since) + r.stderr, \
        f"no error names the corrupt file; log:\n{sim.log(since)}\nstderr: {r.stderr}"
    # The rest still works and nothing was rewritten or removed.
    generate(sim, "ec-p256", "kb", "softcard:bbb", "pb")
    after = snapshot_dir(sim.kmdata)
    # (counters: each start of the service takes its module generations up)
    for name, value in others.items():
        assert after.get(name) == value or name in ("modules", "counters", ".lock"), \
            f"{name} changed"


def test_corrupt_key_file_named_and_others_listed(make_service):
    sim = make_service(modules=1)
    k1 = generate(sim, "ec-p256", "k1", "module")
    k2 = generate(sim, "ec-p256", "k2", "module")
    sim.stop()
    bad = os.path.join(sim.kmdata, f"key_{k1}")
    with open(bad, "wb") as f:
        f.write(b"\x00garbage\xff")
    since = sim.log_size()
    sim.start(modules=1)
    r = sim.run("key", "list", "--json")
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    idents = [k["ident"] for k in json.loads(r.stdout)]
    assert k2 in idents
    assert f"key_{k1}" in sim.log(since) + r.stderr, \
        f"no error names the corrupt file; log:\n{sim.log(since)}\nstderr: {r.stderr}"
    with open(bad, "rb") as f:
        assert f.read() == b"\x00garbage\xff", "the corrupt file was touched"


def test_corrupt_world_file_refused_naming_it(make_service):
    sim = make_service(modules=1)
    sim.stop()
    world = os.path.join(sim.kmdata, "world")
    with open(world, "w") as f:
        f.write("not json")
    log = _expect_refused(sim, "a corrupt world file")
    assert world in log, f"the message does not name {world}: {log!r}"
    with open(world) as f:
        assert f.read() == "not json"


# ---- hostile clients -----------------------------------------------------------------

class CliLoop(threading.Thread):
    """A well-behaved client: runs hsmsim list commands in a loop."""

    def __init__(self, sim):
        super().__init__(daemon=True)
        self.sim, self.stop_flag, self.runs, self.failures = sim, threading.Event(), 0, []

    def run(self):
        cmds = (["module", "list", "--json"], ["softcard", "list", "--json"])
        while not self.stop_flag.is_set():
            for cmd in cmds:
                try:
                    r = self.sim.run(*cmd, timeout=10)
                    if r.returncode != 0:
                        self.failures.append((cmd, r.returncode, r.stderr))
                except subprocess.TimeoutExpired:
                    self.failures.append((cmd, "timeout", ""))
                self.runs += 1


def test_valid_handshake_answered(service):
    # Proves the hand-made frames below are right: a valid Hello gets a HelloReply.
    s = raw_connect(service.socket)
    s.sendall(frame(hello_request()))
    kind, data = read_outcome(s)
    assert kind == "frame", kind
    resp = response_of(data)
    assert resp.get(1) == [1] and 11 in resp, resp
    hello = pb_parse(resp[11][0])
    assert hello.get(1) == [PROTOCOL_VERSION], "protocol version"
    assert hello[3][0].hex() == service.world_id
    assert len(hello[4][0]) == 16, "service instance"
    s.close()


@pytest.mark.parametrize("sock", ["socket", "admin_socket"])
def test_malformed_input_does_not_disturb_other_clients(service, sock):
    path = getattr(service, sock)
    loop = CliLoop(service)
    loop.start()
    held = []
    try:
        # Idle connections and a half-sent header, kept open throughout.
        for _ in range(20):
            held.append(raw_connect(path))
        half = raw_connect(path)
        half.sendall(b"\x00\x00")
        held.append(half)
        stalled = raw_connect(path)
        stalled.sendall(struct.pack(">I", 1000) + b"x" * 10)  # frame never completed
        held.append(stalled)

        cases = {
            "garbage frame": frame(os.urandom(64)),
            "garbage frame of 0xff": frame(b"\xff" * 32),
            "empty frame": frame(b""),
            "oversized header 4 GiB": b"\xff\xff\xff\xff",
            "header just over 1 MiB": struct.pack(">I", 1024 * 1024 + 1),
            "not a frame (HTTP)": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            "request before Hello": frame(pb_field(1, 1) + pb_field(11, b"")),
        }
        for what, data in cases.items():
            s = raw_connect(path)
            s.sendall(data)
            assert_error_or_close(s, what)
            s.close()

        # A frame of kMaxFrame junk bytes.
        s = raw_connect(path)
        try:
            s.sendall(frame(b"\x5a" * (1024 * 1024)))
        except (BrokenPipeError, ConnectionResetError):
            pass
        else:
            assert_error_or_close(s, "1 MiB of junk")
        s.close()

        # Garbage after a valid Hello.
        s = raw_connect(path)
        s.sendall(frame(hello_request()))
        kind, _ = read_outcome(s)
        assert kind == "frame"
        s.sendall(frame(b"\x0a\xff\xff\xff\xff\x0f"))  # length-delimited field overrunning
        assert_error_or_close(s, "garbage after Hello")
        s.close()

        # Hello with another version: the server answers then closes.
        s = raw_connect(path)
        s.sendall(frame(hello_request(version=999)))
        kind, _ = read_outcome(s)
        if kind == "frame":
            kind, _ = read_outcome(s)
        assert kind == "closed", "the connection stays open after a version mismatch"
        s.close()

        time.sleep(0.3)  # let the loop run alongside the held connections
    finally:
        loop.stop_flag.set()
        loop.join(30)
        for s in held:
            s.close()
    assert loop.runs > 0
    assert loop.failures == [], f"the well-behaved client failed: {loop.failures[:3]}"
    assert service.running(), f"the service died; log:\n{service.log()}"
    service.ok("module", "list")
    service.ok("softcard", "list")


def test_admin_request_on_client_socket_refused(service):
    # A ControlModule(clear) sent on the client socket, after a valid Hello.
    s = raw_connect(service.socket)
    s.sendall(frame(hello_request()))
    assert read_outcome(s)[0] == "frame"
    g0 = service.modules()[1]["generation"]
    s.sendall(frame(pb_field(1, 2) + pb_field(40, pb_field(1, 1) + pb_field(2, 1))))
    assert_error_or_close(s, "admin request on the client socket")
    s.close()
    assert service.modules()[1]["generation"] == g0, "the client socket cleared a module"


def test_client_that_never_reads_does_not_block_others(service):
    # 64 requests for 64 KiB of random bytes each, never read: the replies fill
    # the socket buffers. Other clients must still be served meanwhile.
    s = raw_connect(service.socket)
    s.sendall(frame(hello_request()))
    assert read_outcome(s)[0] == "frame"
    batch = b"".join(frame(pb_field(1, i) + pb_field(25, pb_field(1, 1) + pb_field(2, 65536)))
                     for i in range(2, 66))
    s.settimeout(5)
    try:
        s.sendall(batch)
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    loop = CliLoop(service)
    loop.start()
    time.sleep(1.0)
    loop.stop_flag.set()
    loop.join(30)
    s.close()
    assert loop.runs > 0
    assert loop.failures == [], f"a stuck client blocked the others: {loop.failures[:3]}"
    assert service.running()
    service.ok("module", "list")
