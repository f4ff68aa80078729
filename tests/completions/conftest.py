"""Fixtures for the shell completion tests.

`shell` is each shell under test: $COMPLETION_SHELL (one ctest test per
shell) or, when unset, bash, zsh and fish in turn.
`world` is a running `hsmsim serve --modules 1` (env HSMSIM; a Sim of
tests/support/hsmsim_service.py) in a private directory, with the softcards
card1 and card2, the card set ops and one module-protected key (its ident:
world.key); one per test module.
`workdir` is a private directory with a few known files, the current
directory of the shells (for file completion), and `home` their HOME.
"""

import os
import shutil
import socket
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import shells  # noqa: E402
from hsmsim_service import Sim  # noqa: E402
from procs import executable  # noqa: E402

PASSPHRASE = "correct horse\n"
SOFTCARDS = ("card1", "card2")
CARDSETS = ("ops",)


def pytest_generate_tests(metafunc):
    if "shell" in metafunc.fixturenames:
        chosen = os.environ.get("COMPLETION_SHELL")
        if chosen and chosen not in shells.SHELLS:
            raise pytest.UsageError(f"COMPLETION_SHELL={chosen}: not one of {shells.SHELLS}")
        metafunc.parametrize("shell", [chosen] if chosen else list(shells.SHELLS))


@pytest.fixture(scope="module")
def world():
    # Short path: a socket path holds at most 107 bytes.
    root = tempfile.mkdtemp(prefix="cpl-w.", dir="/tmp")
    w = Sim(executable("HSMSIM"), root)
    try:
        w.start(modules=1, init_delay_ms=0)
        for name in SOFTCARDS:
            w.create_token(name, PASSPHRASE)
        for name in CARDSETS:
            w.create_token(name, PASSPHRASE, kind="cardset")
        out = w.ok("key", "generate", "--type", "ec-p256", "--label", "k",
                   "--protect", "module").stdout
        w.key = out.split("(ident ")[1].split(")")[0]
        yield w
    finally:
        w.stop(check=False)
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
    for name in ("tokens.json", "passphrase.txt", "notes.md", "fleet.toml"):
        with open(os.path.join(path, name), "w") as f:
            f.write("x\n")
    os.mkdir(os.path.join(path, "subdir"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
