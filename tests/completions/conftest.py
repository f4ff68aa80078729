"""Fixtures for the shell completion tests.

`shell` is each shell under test: $COMPLETION_SHELL (one ctest test per
shell) or, when unset, bash, zsh and fish in turn.
`world` is a running `hsmsim serve --modules 1` (env HSMSIM) in a private
directory, with the softcards card1 and card2, the card set ops and one
module-protected key (its ident: world.key); one per test module.
`workdir` is a private directory with a few known files, the current
directory of the shells (for file completion), and `home` their HOME.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import shells  # noqa: E402
from procs import executable, read_first_line  # noqa: E402,F401 (executable: test_drift)

READY_TIMEOUT = 10.0
SOFTCARDS = ("card1", "card2")
CARDSETS = ("ops",)


def pytest_generate_tests(metafunc):
    if "shell" in metafunc.fixturenames:
        chosen = os.environ.get("COMPLETION_SHELL")
        if chosen and chosen not in shells.SHELLS:
            raise pytest.UsageError(f"COMPLETION_SHELL={chosen}: not one of {shells.SHELLS}")
        metafunc.parametrize("shell", [chosen] if chosen else list(shells.SHELLS))


class World:
    """A Security World directory and the `hsmsim serve` running on it."""

    def __init__(self, hsmsim, root):
        self.hsmsim = hsmsim
        self.root = root
        self.kmdata = os.path.join(root, "km")
        self.socket = os.path.join(root, "c.sock")
        self.admin_socket = os.path.join(root, "a.sock")
        os.mkdir(self.kmdata, 0o700)
        self.env = dict(os.environ, NFAST_KMDATA=self.kmdata, HSMSIM_SOCKET=self.socket,
                        HSMSIM_ADMIN_SOCKET=self.admin_socket, LC_ALL="C.UTF-8")
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.root, "serve.log"), "wb")
        self.proc = subprocess.Popen(
            [self.hsmsim, "serve", "--modules", "1", "--init-delay-ms", "0"],
            env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log)
        line = read_first_line(self.proc, READY_TIMEOUT) or ""
        if "ready" not in line:
            self.stop()
            with open(os.path.join(self.root, "serve.log"), errors="replace") as f:
                pytest.fail(f"hsmsim serve did not get ready: {line!r}\n{f.read()}")

    def cli(self, *args, passphrase_file=True):
        passphrase = os.path.join(self.root, "passphrase")
        with open(passphrase, "w") as f:
            f.write("correct horse\n")
        if passphrase_file:
            args = (*args, "--passphrase-file", passphrase)
        proc = subprocess.run([self.hsmsim, *args], env=self.env, capture_output=True,
                              text=True, timeout=60)
        if proc.returncode != 0:
            pytest.fail(f"hsmsim {' '.join(args)} failed: {proc.stderr}")
        return proc.stdout

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.proc.stdout.close()
            self.log.close()


@pytest.fixture(scope="module")
def world():
    hsmsim = executable("HSMSIM")
    # Short path: a socket path holds at most 107 bytes.
    root = tempfile.mkdtemp(prefix="cpl-w.", dir="/tmp")
    w = World(hsmsim, root)
    try:
        w.start()
        for name in SOFTCARDS:
            w.cli("softcard", "create", name)
        for name in CARDSETS:
            w.cli("cardset", "create", name)
        out = w.cli("key", "generate", "--type", "ec-p256", "--label", "k", "--protect", "module",
                    passphrase_file=False)
        w.key = out.split("(ident ")[1].split(")")[0]
        yield w
    finally:
        w.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def hung_socket():
    """A socket that accepts connections and never answers: an HSM service
    that hangs."""
    root = tempfile.mkdtemp(prefix="cpl-h.", dir="/tmp")
    path = os.path.join(root, "hung.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(16)
        yield path
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def home():
    path = tempfile.mkdtemp(prefix="cpl-home.")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="cpl-cwd.")
    for name in ("tokens.json", "passphrase.txt", "notes.md"):
        with open(os.path.join(path, name), "w") as f:
            f.write("x\n")
    os.mkdir(os.path.join(path, "subdir"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
