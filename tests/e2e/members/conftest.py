"""Fixtures for the tests of the member farm (tests/support/p11kit_members.py):
SoftHSM2 tokens served by `p11-kit server`, one per simulated network HSM.

`farm` is a started MemberFarm of three members (hsm-a, hsm-b, hsm-c) in the
test's tmp_path; it is closed at the end of the test, which must leave none
of its processes (servers and their p11-kit-remote children) alive.
"""

import os
import sys

import pytest

# The PKCS#11 clients of these tests (Python, pkcs11-tool, p11tool) are not
# instrumented and cannot load the module of an ASan build; the service, its
# workers and preloadrun are tested there all the same.
external_client = pytest.mark.skipif(
    os.environ.get("PRELOADRUN_SANITIZE") == "1",
    reason="uninstrumented client cannot load the ASan-built module; runs in the regular build")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "support"))
from p11kit_members import MemberFarm  # noqa: E402
from procs import proc_stat  # noqa: E402


@pytest.fixture
def farm(tmp_path):
    with MemberFarm(str(tmp_path / "farm")) as f:
        yield f
        pids = f.pids()
    alive = [pid for pid in pids if (proc_stat(pid) or ["Z"])[0] != "Z"]
    assert alive == [], "processes of the farm outlived close()"
