"""Fixtures for the end-to-end tests of hsmsim: they drive the real binary.

`hsmsim_bin` is the binary under test (env HSMSIM, set by ctest).
`make_service(...)` starts `hsmsim serve` in a fresh private directory under
/tmp (short paths: sun_path holds 108 bytes) and returns a Sim
(tests/support/hsmsim_service.py) once the ready line has been printed;
every Sim still running at the end of the test is stopped with SIGTERM and
must exit 0 and remove both socket files.
`service` is one started Sim with the defaults (2 modules, 100 ms init delay).
"""

import os
import shutil
import stat
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from hsmsim_service import Sim  # noqa: E402
from outcome import failed, pytest_runtest_makereport  # noqa: E402,F401 (a hook)
from procs import executable  # noqa: E402


@pytest.fixture(scope="session")
def hsmsim_bin():
    return executable("HSMSIM")


def snapshot_dir(path, ignore=()):
    """{name: (mode, bytes)} of the files of a directory (None for the bytes of
    what is not a regular file), without the names in `ignore`."""
    out = {}
    for name in sorted(os.listdir(path)):
        if name in ignore:
            continue
        p = os.path.join(path, name)
        st = os.lstat(p)
        data = None
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                data = f.read()
        out[name] = (st.st_mode, data)
    return out


@pytest.fixture
def make_service(hsmsim_bin, request):
    """Factory: make_service(modules=2, init_delay_ms=100, op_latency_ms=None,
    kmdata=None, start=True, extra=()) -> Sim. Each call gets its own
    directory (sockets in it); pass kmdata=other.kmdata to share a world."""
    sims = []
    roots = []

    def factory(modules=2, init_delay_ms=100, op_latency_ms=None, kmdata=None,
                start=True, extra=()):
        root = tempfile.mkdtemp(prefix="hs", dir="/tmp")
        roots.append(root)
        sim = Sim(hsmsim_bin, root, kmdata)
        sims.append(sim)
        if start:
            sim.start(modules=modules, init_delay_ms=init_delay_ms,
                      op_latency_ms=op_latency_ms, extra=extra)
        return sim

    yield factory

    errors = []
    for sim in sims:
        if sim.running():
            try:
                sim.stop()
            except BaseException as e:  # report every service, then fail
                errors.append(f"{sim.root}: {e}")
                sim.kill()
        else:
            sim.kill()
    if failed(request) or errors:
        for sim in sims:
            print(f"keeping {sim.root} (serve log: {sim.log_path})")
    else:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)
    if errors:
        pytest.fail("service teardown: " + "; ".join(errors))


@pytest.fixture
def service(make_service):
    return make_service()


# -- preloadrun (test_preloadrun.py; helpers in preloadrun_support.py) --------

@pytest.fixture(scope="session")
def preloadrun_bin():
    return executable("PRELOADRUN")


@pytest.fixture(scope="session")
def probe_bin():
    return executable("PROBE")


@pytest.fixture
def pr(make_service, preloadrun_bin, probe_bin):
    """A preloadrun_support.Runner on a fresh service (2 modules, no init
    delay, no token). Whatever it started is killed at the end."""
    from preloadrun_support import Runner
    runner = Runner(preloadrun_bin, probe_bin, make_service(modules=2, init_delay_ms=0))
    yield runner
    runner.cleanup()


@pytest.fixture
def pr_card(pr):
    """`pr` with softcard c1 (passphrase PASS1); pr.card_pass is its file."""
    from preloadrun_support import PASS1
    pr.card_pass = pr.softcard("c1", PASS1)
    return pr
