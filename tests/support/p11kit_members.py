"""A farm of SoftHSM2 tokens, each served by its own `p11-kit server`, that
act as separate network HSMs holding the same keys.

Every member has its own SoftHSM2 configuration and token directory (the
environment variable SOFTHSM2_CONF is set for every softhsm2-util, pkcs11-tool
and server process; the machine's global configuration is never read) and its
own `p11-kit server --foreground` on a Unix socket. A client reaches a member
by loading CLIENT_MODULE (p11-kit-client.so) with P11_KIT_SERVER_ADDRESS set
to that member's address (Member.env).

The server forks one `p11-kit-remote` process per client connection, which
loads SoftHSM2 and serves that connection until the client goes away. The
server runs in a process group of its own, so kill(), stop() and cont()
signal the whole group: the server and every connection it serves, as when
a network HSM goes away or hangs.

Layout under base_dir:
  keys/<name>.pem, keys/<name>.pub.pem   the shared key pairs (PKCS#8, SPKI)
  <member>/softhsm2.conf, <member>/tokens/, <member>/server.log
  <member>.sock                          the server's socket (in a short
                                         directory under /tmp instead when
                                         base_dir is too long for sun_path)
"""

import atexit
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import weakref

from procs import processes, wait_for

KEYS = [
    {"name": "ec", "id": "01", "label": "ec-key", "type": "EC", "curve": "prime256v1"},
    {"name": "rsa", "id": "02", "label": "rsa-key", "type": "RSA", "bits": 2048},
]
CLIENT_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

START_TIMEOUT_S = 10.0
TOOL_TIMEOUT_S = 30.0
MAX_SOCKET_PATH = 99          # sun_path holds 108 bytes; stay well under

_live_farms = weakref.WeakSet()


def key_spec(key_name):
    """The entry of KEYS named `key_name` (KeyError if there is none)."""
    for spec in KEYS:
        if spec["name"] == key_name:
            return spec
    raise KeyError(key_name)


def _run(argv, env=None, timeout=TOOL_TIMEOUT_S):
    """Runs a tool to completion; its stdout (text). A RuntimeError naming
    the program and its output when it fails. The arguments are not in the
    message: they may hold the test PIN."""
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{os.path.basename(argv[0])} did not finish within "
                           f"{timeout}s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"{os.path.basename(argv[0])} {argv[1] if len(argv) > 1 else ''} "
                           f"exited {proc.returncode}: {proc.stdout.strip()} {proc.stderr.strip()}")
    return proc.stdout


def _generate_key(spec, path):
    """Writes a new private key of the type of `spec` to `path` (PKCS#8 PEM,
    mode 0600) and its public key to the .pub.pem next to it."""
    if spec["type"] == "EC":
        opts = ["-algorithm", "EC", "-pkeyopt", f"ec_paramgen_curve:{spec['curve']}"]
    elif spec["type"] == "RSA":
        opts = ["-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{spec['bits']}"]
    else:
        raise ValueError(f"unknown key type {spec['type']}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    _run(["openssl", "genpkey", *opts, "-out", path])
    _run(["openssl", "pkey", "-in", path, "-pubout", "-out", _pub_path(path)])


def _pub_path(private_path):
    return private_path[:-len(".pem")] + ".pub.pem"


def _pem_to_der(pem_path):
    """The DER bytes of the public key in `pem_path`."""
    return subprocess.run(["openssl", "pkey", "-pubin", "-in", pem_path, "-outform", "DER"],
                          capture_output=True, check=True, timeout=TOOL_TIMEOUT_S).stdout


def _in_parallel(function, items):
    """[function(item) for item in items], run in threads (the work is in
    subprocesses); the first exception is raised once all are done."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = [pool.submit(function, item) for item in items]
        concurrent.futures.wait(futures)
    return [f.result() for f in futures]


def _group_pids(pgid):
    """The pids of the live (not zombie) processes of process group `pgid`."""
    return [pid for pid, fields in processes() if int(fields[2]) == pgid and fields[0] != "Z"]


class Member:
    """One network HSM: a SoftHSM2 token in its own directory, served by its
    own `p11-kit server`."""

    def __init__(self, farm, name):
        self.farm = farm
        self.name = name
        self.label = name
        self.serial = None
        self.dir = os.path.join(farm.base_dir, name)
        self.conf = os.path.join(self.dir, "softhsm2.conf")
        self.token_dir = os.path.join(self.dir, "tokens")
        self.log_path = os.path.join(self.dir, "server.log")
        self.socket_path = os.path.join(farm.socket_dir, name + ".sock")
        if len(self.socket_path.encode()) > MAX_SOCKET_PATH:
            raise ValueError(f"socket path too long: {self.socket_path}")
        self.address = "unix:path=" + self.socket_path
        self.env = {"P11_KIT_SERVER_ADDRESS": self.address}
        self.key_paths = dict(farm.key_paths)   # key name -> private key PEM on this token
        self.proc = None
        self.pgid = None
        self.stopped = False

    # -- token ------------------------------------------------------------------

    def tool_env(self):
        """The environment of softhsm2-util, pkcs11-tool (on SOFTHSM_MODULE)
        and the server for this member's token."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("P11_KIT_") and k != "SOFTHSM2_CONF"}
        env["SOFTHSM2_CONF"] = self.conf
        return env

    def _create_token(self):
        """Writes the SoftHSM2 configuration, initializes the token and reads
        back its serial."""
        os.makedirs(self.token_dir, mode=0o700)
        with open(self.conf, "w") as f:
            f.write(f"directories.tokendir = {self.token_dir}\n"
                    "objectstore.backend = file\n"
                    "log.level = ERROR\n"
                    "slots.removable = false\n")
        _run(["softhsm2-util", "--init-token", "--free", "--label", self.label,
              "--pin", self.farm.pin, "--so-pin", self.farm.so_pin], env=self.tool_env())
        self.serial = self._read_serial()

    def _read_serial(self):
        """The serial number SoftHSM2 gave the token (from `softhsm2-util
        --show-slots`)."""
        out = _run(["softhsm2-util", "--show-slots"], env=self.tool_env())
        for block in re.split(r"\n(?=Slot )", out):
            label = re.search(r"^\s*Label:\s*(.*?)\s*$", block, re.M)
            serial = re.search(r"^\s*Serial number:\s*(\S+)\s*$", block, re.M)
            if label and serial and label.group(1) == self.label:
                return serial.group(1)
        raise RuntimeError(f"token {self.label} not found by softhsm2-util --show-slots")

    def _softhsm_tool(self, *args):
        """Runs pkcs11-tool directly on SOFTHSM_MODULE for this token."""
        return _run(["pkcs11-tool", "--module", SOFTHSM_MODULE, "--token-label", self.label,
                     *args], env=self.tool_env())

    def _import_key(self, spec, pem_path):
        """Imports the key pair in `pem_path` under the id and label of
        `spec` (softhsm2-util creates the private and the public key
        object)."""
        _run(["softhsm2-util", "--import", pem_path, "--id", spec["id"], "--label", spec["label"],
              "--token", self.label, "--pin", self.farm.pin], env=self.tool_env())

    def objects(self):
        """[(class, key type, label, id)] of the token's objects, read
        directly through SOFTHSM_MODULE after login, e.g.
        ("Private Key Object", "EC", "ec-key", "01")."""
        out = self._softhsm_tool("--login", "--pin", self.farm.pin, "--list-objects")
        found = []
        for block in re.split(r"\n(?=\S)", out):
            head = re.match(r"(\w+ Key Object|Certificate Object|Data object|Secret Key Object)"
                            r"(?:;\s*(\w+))?", block)
            if not head:
                continue
            label = re.search(r"^\s*label:\s*(.*?)\s*$", block, re.M)
            oid = re.search(r"^\s*ID:\s*(\S+)\s*$", block, re.M)
            found.append((head.group(1), head.group(2), label and label.group(1),
                          oid and oid.group(1)))
        return found

    def _check_keys(self, pem_paths):
        """Raises unless the token holds, for every key of KEYS, exactly one
        private and one public key object of its type, CKA_ID and label,
        the public one being the public key of pem_paths[name] (read back
        by pkcs11-tool from CKA_EC_POINT/CKA_EC_PARAMS or
        CKA_MODULUS/CKA_PUBLIC_EXPONENT), and nothing else."""
        objects = sorted(self.objects())
        expected = sorted((kind, spec["type"], spec["label"], spec["id"])
                          for spec in KEYS for kind in ("Private Key Object", "Public Key Object"))
        if objects != expected:
            raise RuntimeError(f"{self.name}: token objects {objects}, expected {expected}")
        for spec in KEYS:
            if self._public_key_der(spec) != _pem_to_der(_pub_path(pem_paths[spec["name"]])):
                raise RuntimeError(f"{self.name}: public key object {spec['id']} is not the "
                                   "key imported")

    def _public_key_der(self, spec):
        """The SubjectPublicKeyInfo (DER) pkcs11-tool builds from the public
        key object of `spec` (fails when its key attributes are missing)."""
        out_path = os.path.join(self.dir, f"pub-{spec['name']}.der")
        try:
            self._softhsm_tool("--read-object", "--type", "pubkey", "--id", spec["id"],
                               "--output-file", out_path)
            with open(out_path, "rb") as f:
                return f.read()
        finally:
            if os.path.exists(out_path):
                os.unlink(out_path)

    def reinit_with_other_key(self, key_name):
        """Replaces key `key_name` on this token by a new, different key pair
        of the same type, under the same CKA_ID and label; the other keys
        stay. The server, if running, is restarted (so no connection keeps
        objects of the old key). Returns the path of the new private key."""
        spec = key_spec(key_name)
        was_running = self.running()
        self.kill()
        pem = os.path.join(self.dir, f"other-{key_name}.pem")
        _generate_key(spec, pem)
        new_der = _pem_to_der(_pub_path(pem))
        if new_der in (_pem_to_der(_pub_path(self.key_paths[key_name])),
                       _pem_to_der(_pub_path(self.farm.key_paths[key_name]))):
            raise RuntimeError("the new key is the old one")
        for kind in ("privkey", "pubkey"):
            self._softhsm_tool("--login", "--pin", self.farm.pin, "--delete-object",
                               "--type", kind, "--id", spec["id"])
        self._import_key(spec, pem)
        self.key_paths = dict(self.key_paths, **{key_name: pem})
        self._check_keys(self.key_paths)
        if was_running:
            self.start()
        return pem

    # -- server -----------------------------------------------------------------

    def start(self):
        """Starts (or restarts) the server; returns once a client of
        CLIENT_MODULE can open a session on the token through it."""
        self.kill()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                ["p11-kit", "server", "--foreground", "--name", self.socket_path,
                 "--provider", SOFTHSM_MODULE, f"pkcs11:token={self.label}"],
                env=self.tool_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True)
        self.pgid = self.proc.pid
        self.stopped = False
        self.wait_ready()

    def wait_ready(self, timeout=START_TIMEOUT_S):
        """Waits until a client opens a session on the token through the
        server (pkcs11-tool on CLIENT_MODULE); a RuntimeError if the server
        exits first, an AssertionError after `timeout` seconds."""
        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"p11-kit server of {self.name} exited {self.proc.returncode}: "
                                   + self.log_tail())
            if not os.path.exists(self.socket_path):
                return False
            env = dict(self.tool_env(), **self.env)
            try:
                probe = subprocess.run(["pkcs11-tool", "--module", CLIENT_MODULE, "--token-label",
                                        self.label, "--list-objects", "--type", "pubkey"],
                                       env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                       timeout=5)
            except subprocess.TimeoutExpired:
                return False
            return probe.returncode == 0
        wait_for(ready, timeout=timeout, what=f"p11-kit server of {self.name} to serve its token",
                 interval=0.02)

    def log_tail(self, size=2000):
        """The end of the server's log file."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def pids(self):
        """The live processes of the server's group: the server and the
        p11-kit-remote process of every connection."""
        return _group_pids(self.pgid) if self.pgid else []

    def _signal(self, signo):
        try:
            os.killpg(self.pgid, signo)
        except ProcessLookupError:
            pass

    def kill(self):
        """SIGKILLs the server and every connection it serves (the network
        HSM goes away); returns once they are gone. Idempotent."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        self.proc.wait()
        # The p11-kit-remote processes were the server's children: init
        # reaps them now.
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            self._signal(signal.SIGKILL)
            time.sleep(0.01)
        if self.pids():
            raise RuntimeError(f"processes of {self.name} outlived SIGKILL: {self.pids()}")
        self.proc = None
        self.pgid = None
        self.stopped = False

    def stop(self):
        """SIGSTOPs the server and its connections (the HSM hangs): calls
        block, new connections too (the kernel still queues them)."""
        if self.running():
            self._signal(signal.SIGSTOP)
            self.stopped = True

    def cont(self):
        """SIGCONTs the server and its connections."""
        if self.running():
            self._signal(signal.SIGCONT)
            self.stopped = False

    def running(self):
        """Whether the server process exists (stopped or not)."""
        return self.proc is not None and self.proc.poll() is None

    def __repr__(self):
        return f"Member({self.name!r}, serial={self.serial!r}, address={self.address!r})"


class MemberFarm:
    """Several Members with the same key pairs (KEYS), every server started.
    close() (also at exit of the with block, and at interpreter exit) kills
    every server."""

    def __init__(self, base_dir, names=("hsm-a", "hsm-b", "hsm-c"), pin="1234", so_pin="5678"):
        self.base_dir = os.path.abspath(base_dir)
        self.pin = pin
        self.so_pin = so_pin
        self.members = []
        self._pending = []          # every Member made, for close()
        self.closed = False
        self._own_socket_dir = None
        os.makedirs(self.base_dir, exist_ok=True)
        # Room for "/<name>.sock" with names of up to 24 bytes.
        if len(self.base_dir.encode()) + 30 <= MAX_SOCKET_PATH:
            self.socket_dir = self.base_dir
        else:
            self._own_socket_dir = tempfile.mkdtemp(prefix="p11m", dir="/tmp")
            self.socket_dir = self._own_socket_dir
        _live_farms.add(self)
        try:
            key_dir = os.path.join(self.base_dir, "keys")
            os.makedirs(key_dir, mode=0o700, exist_ok=True)
            self.key_paths = {spec["name"]: os.path.join(key_dir, spec["name"] + ".pem")
                              for spec in KEYS}
            _in_parallel(lambda spec: _generate_key(spec, self.key_paths[spec["name"]]), KEYS)
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate member names in {names}")
            self.members = _in_parallel(self._make_member, names)
            _in_parallel(Member.start, self.members)
        except BaseException:
            try:
                self.close()
            except Exception:
                pass
            raise

    def _make_member(self, name):
        """A new Member with its token holding every key of KEYS, checked
        (server not started)."""
        if any(m.name == name for m in self.members):
            raise ValueError(f"member {name} exists")
        member = Member(self, name)
        self._pending.append(member)
        member._create_token()
        for spec in KEYS:
            member._import_key(spec, self.key_paths[spec["name"]])
        member._check_keys(self.key_paths)
        return member

    def member(self, name):
        """The member named `name` (KeyError if there is none)."""
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    def add_member(self, name):
        """A new member with the same keys, its server started."""
        member = self._make_member(name)
        self.members.append(member)
        member.start()
        return member

    def public_key_pem(self, key_name):
        """The shared public key `key_name` (PEM SubjectPublicKeyInfo)."""
        with open(_pub_path(self.key_paths[key_spec(key_name)["name"]]), "rb") as f:
            return f.read()

    def pids(self):
        """Every live process of every member's server group."""
        return [pid for m in self.members for pid in m.pids()]

    def close(self):
        """Kills every server (stopped ones are continued first) and removes
        the socket directory made under /tmp, if any. Idempotent."""
        errors = []
        for member in self._pending:
            try:
                member.kill()
            except Exception as e:  # keep killing the others
                errors.append(e)
        if self._own_socket_dir:
            shutil.rmtree(self._own_socket_dir, ignore_errors=True)
            self._own_socket_dir = None
        self.closed = True
        _live_farms.discard(self)
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@atexit.register
def _close_all():
    for farm in list(_live_farms):
        try:
            farm.close()
        except Exception:
            pass
