"""scripts/member_demo.py, as `scripts/dev.sh member-demo` runs it: it must
pass (the client saw no error, every member served) and say so."""

import os
import subprocess

from conftest import external_client
from procs import executable

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(HERE, "..", "..", "..", "scripts", "member_demo.py")


@external_client
def test_member_demo_passes():
    build = os.path.dirname(os.path.dirname(os.path.dirname(executable("HSMSIM"))))
    r = subprocess.run(["/usr/bin/python3", DEMO, build], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "demo: PASSED" in r.stdout
    assert "with 0 errors" in r.stdout
    assert "hsm-b serves again" in r.stdout and "hsm-c joined and serves" in r.stdout
    # Nothing of the demo is left running.
    assert "preloadrun-member-demo." not in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout
