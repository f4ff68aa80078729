"""Fixtures for the pty tests of child supervision.

`supervise` is the command prefix that runs COMMAND supervised. Every test
runs twice: through the real `preloadrun -q --socket S --` (env PRELOADRUN)
against a running `hsmsim serve` (env HSMSIM; one per session, no token to
load), and through supervise-driver (env SUPERVISE_DRIVER; the supervision
core alone), when that is set. `probe` is the probe program (env PROBE).
`workdir` is a private directory, kept when the test fails.
"""

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from hsmsim_service import Sim  # noqa: E402
from outcome import pytest_runtest_makereport, scratch_dir  # noqa: E402,F401 (a hook)
from procs import executable  # noqa: E402


@pytest.fixture(scope="session")
def hsm_service():
    """A running `hsmsim serve` (2 modules) in a private directory under
    /tmp; yields its client socket path. XDG_RUNTIME_DIR points into that
    directory for the session, so preloadrun's tokens files are private."""
    root = tempfile.mkdtemp(prefix="hs", dir="/tmp")
    sim = Sim(executable("HSMSIM"), root)
    xdg = os.path.join(root, "x")
    os.mkdir(xdg, 0o700)
    sim.start(modules=2, init_delay_ms=0)
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = xdg
    yield sim.socket
    if saved is None:
        os.environ.pop("XDG_RUNTIME_DIR", None)
    else:
        os.environ["XDG_RUNTIME_DIR"] = saved
    sim.stop(check=False)
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
    with scratch_dir(request, "preloadrun-pty-") as path:
        yield path
