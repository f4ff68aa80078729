"""Fixtures for the pty tests of child supervision.

`supervise` is the command prefix that runs COMMAND supervised. Every test
runs twice: through the real `preloadrun -q --socket S --` (env PRELOADRUN)
against a running `hsmsim serve` (env HSMSIM; one per session, no token to
load), and through supervise-driver (env SUPERVISE_DRIVER; the supervision
core alone), when that is set. `probe` is the probe program (env PROBE).
`workdir` is a private directory, kept when the test fails.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from procs import executable, read_first_line  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)




READY_RE = re.compile(r"^hsmsim: ready: .* socket (?P<socket>\S+), admin socket \S+$")


@pytest.fixture(scope="session")
def hsm_service():
    """A running `hsmsim serve` (2 modules) in a private directory under
    /tmp; yields its client socket path. XDG_RUNTIME_DIR points into that
    directory for the session, so preloadrun's tokens files are private."""
    hsmsim = executable("HSMSIM")
    root = tempfile.mkdtemp(prefix="hs", dir="/tmp")
    kmdata = os.path.join(root, "km")
    os.mkdir(kmdata, 0o700)
    xdg = os.path.join(root, "x")
    os.mkdir(xdg, 0o700)
    sock = os.path.join(root, "c.sock")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "HSMSIM_SOCKET", "HSMSIM_ADMIN_SOCKET")}
    env.update(NFAST_KMDATA=kmdata, HSMSIM_SOCKET=sock,
               HSMSIM_ADMIN_SOCKET=os.path.join(root, "a.sock"))
    with open(os.path.join(root, "serve.log"), "wb") as log:
        proc = subprocess.Popen([hsmsim, "serve", "--modules", "2", "--init-delay-ms", "0"],
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=log)
    line = read_first_line(proc)
    if line is None or not READY_RE.match(line):
        proc.kill()
        proc.wait()
        pytest.fail(f"hsmsim serve did not get ready: {line!r} (log in {root}/serve.log)")
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = xdg
    yield sock
    if saved is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = saved
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    left = os.listdir(os.path.join(xdg, "preloadrun")) if os.path.isdir(
        os.path.join(xdg, "preloadrun")) else []
    shutil.rmtree(root, ignore_errors=True)
    assert left == [], f"tokens files left behind by preloadrun: {left}"


@pytest.fixture(scope="session", params=["preloadrun", "supervise-driver"])
def supervise(request):
    """argv prefix: supervise + [COMMAND, ARG...] runs COMMAND supervised."""
    if request.param == "preloadrun":
        sock = request.getfixturevalue("hsm_service")
        return [executable("PRELOADRUN"), "-q", "--socket", sock, "--"]
    if not os.environ.get("SUPERVISE_DRIVER"):
        pytest.skip("SUPERVISE_DRIVER is not set")
    return [executable("SUPERVISE_DRIVER"), "--"]


@pytest.fixture(scope="session")
def probe():
    return executable("PROBE")


@pytest.fixture
def workdir(request):
    path = tempfile.mkdtemp(prefix="preloadrun-pty-")
    yield path
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"test failed: keeping {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)
