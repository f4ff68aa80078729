"""Fixtures for the tests of the member farm (tests/support/p11kit_members.py):
SoftHSM2 tokens served by `p11-kit server`, one per simulated network HSM.

`farm` is a started MemberFarm of three members (hsm-a, hsm-b, hsm-c) in the
test's tmp_path; it is closed at the end of the test, which must leave none
of its processes (servers and their p11-kit-remote children) alive.
"""

import json
import os
import subprocess
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
from procs import proc_stat, wait_for  # noqa: E402

DEMO_CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                           "scripts", "demo_client.py")


@pytest.fixture
def farm(tmp_path):
    with MemberFarm(str(tmp_path / "farm")) as f:
        yield f
        pids = f.pids()
    alive = [pid for pid in pids if (proc_stat(pid) or ["Z"])[0] != "Z"]
    assert alive == [], "processes of the farm outlived close()"


class SupervisedClient:
    """The demo's client (PyKCS11 through the module, every signature checked
    in software) signing for `seconds` under `preloadrun -s signing` with the
    PIN in `pin_path`; its output in tmp_path/app.log."""

    def __init__(self, tools, service, pin_path, tmp_path, seconds, env=None):
        self.log = tmp_path / "app.log"
        self.ready = str(tmp_path / "client.ready")
        self.result = str(tmp_path / "client.json")
        self.proc = subprocess.Popen(
            [tools["preloadrun"], "-s", "signing", "--passphrase-file", str(pin_path), "--",
             "/usr/bin/python3", DEMO_CLIENT, "--module", tools["module"], "--token",
             "signing", "--label", "ec-key", "--seconds", str(seconds), "--ready-file",
             self.ready, "--result-file", self.result],
            env=env if env is not None else service.env, stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT)

    def wait_first_signature(self):
        wait_for(lambda: os.path.exists(self.ready), timeout=30,
                 what="the client's first signature")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def assert_no_error(self, timeout):
        """Waits for the client to end; it must have signed and seen no error."""
        self.proc.wait(timeout=timeout)
        out = self.log.read_text()
        with open(self.result) as f:
            counts = json.load(f)
        assert self.proc.returncode == 0, out
        assert counts["errors"] == 0 and counts["signatures"] > 100, (counts, out)
