"""scripts/demo.sh end to end against the build tree (DEMO_BUILD_DIR, set by
ctest): a PKCS#11 client signs under preloadrun while module 2 is cleared and
module 4 enrolled. The demo exits 0, its summary says the client saw no error
and both modules served signatures again, and it leaves nothing behind: no
process, no temporary directory, also when it is stopped half-way."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

import pytest

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts", "demo.sh")


@pytest.fixture(scope="session")
def build_dir():
    path = os.environ.get("DEMO_BUILD_DIR")
    if not path:
        pytest.fail("DEMO_BUILD_DIR is not set: run this test through ctest")
    return path


@pytest.fixture
def tmpdir_env():
    """A private TMPDIR for the demo (its work directory goes there), and an
    environment without a terminal's colour or the caller's PKCS#11 setup."""
    root = tempfile.mkdtemp(prefix="demo-test.", dir="/tmp")  # short: sun_path
    env = dict(os.environ)
    for var in ("NO_COLOR", "NFAST_NFKM_TOKENSFILE", "CKNFAST_LOADSHARING",
                "CKNFAST_RELOAD_KEYS", "NFAST_KMDATA", "HSMSIM_SOCKET", "HSMSIM_ADMIN_SOCKET"):
        env.pop(var, None)
    env["TMPDIR"] = root
    env["LC_ALL"] = "C"
    yield root, env
    shutil.rmtree(root, ignore_errors=True)


def processes_using(path):
    """Processes whose command line names something under path."""
    found = []
    needle = path.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            found.append(pid + ": " + cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def assert_nothing_left(root):
    deadline = time.monotonic() + 5
    while processes_using(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_using(root) == []
    assert os.listdir(root) == [], "the demo's temporary directory is still there"


def start_demo(build_dir, env, **kw):
    return subprocess.Popen([DEMO, build_dir], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def finish(proc, timeout):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the demo did not end within {timeout} s\n{out}\n{err}")
    return out, err


def test_demo_passes_and_cleans_up(build_dir, tmpdir_env):
    root, env = tmpdir_env
    proc = start_demo(build_dir, env)
    out, err = finish(proc, 90)
    report = f"exit {proc.returncode}\n--- stdout\n{out}\n--- stderr\n{err}"
    assert proc.returncode == 0, report
    summary = out.split("== Summary", 1)[1]

    m = re.search(r"^  client +(\d+) signatures made and verified in [\d.]+ s, (\d+) errors, "
                  r"exit status 0$", summary, re.M)
    assert m and int(m.group(1)) > 0 and m.group(2) == "0", report
    assert re.search(r"^  module 2 .*cleared at [\d.]+ s, serving again: yes", summary, re.M), report
    assert re.search(r"^  module 4 .*enrolled at [\d.]+ s, serving: yes", summary, re.M), report
    for n in (1, 2, 3, 4):
        grown = re.search(rf"^  module {n} +ops +\d+ .* at the end \(\+(\d+)\)", summary, re.M)
        assert grown and int(grown.group(1)) > 0, report
    assert re.search(r"^  preloadrun +reloaded democard onto module 2 \(generation 1\), "
                     r"module 4 ", summary, re.M), report
    assert re.search(r"^  pkcs11 +reloaded the key onto module 2, module 4$", summary, re.M), report
    assert re.search(r"^  unloaded +nothing left loaded once preloadrun exited$", summary,
                     re.M), report
    # The fleet's closing list says why it shows no objects, and shows none.
    fleet = out.split("== The fleet at the end", 1)[1].split("== ", 1)[0]
    assert "preloadrun unloaded democard" in fleet, report
    rows = [line.split() for line in fleet.splitlines() if re.match(r"^\d+ ", line)]
    assert len(rows) == 4 and all(row[-1] == "0" for row in rows), report
    assert re.search(r"^  passphrase +a wrong one refused", summary, re.M), report
    assert re.search(r"^  result +PASS$", summary, re.M), report
    assert "\033[" not in out, "colours on a pipe"
    # What the summary says is backed by the logs shown during the run.
    assert "module 2 is initialising: its tokens are gone from it" in err, report
    assert "module 2: 1 token(s) loaded" in err and "module 4: 1 token(s) loaded" in err, report
    assert "ERROR" not in out, report
    assert_nothing_left(root)


def test_demo_stopped_half_way_leaves_nothing(build_dir, tmpdir_env):
    root, env = tmpdir_env
    proc = start_demo(build_dir, env)
    # Stop it once the client signs: hsmsim, preloadrun and the client run.
    deadline = time.monotonic() + 30
    for line in proc.stdout:
        if line.startswith("client:   1.0 s") or time.monotonic() > deadline:
            break
    os.kill(proc.pid, signal.SIGTERM)
    out, err = finish(proc, 20)
    assert proc.returncode == 143, f"exit {proc.returncode}\n{out}\n{err}"
    assert_nothing_left(root)


def test_demo_interrupted_on_a_terminal_leaves_nothing(build_dir, tmpdir_env):
    """Ctrl-C on a terminal: preloadrun has given the terminal to the client,
    which gets the SIGINT; the demo then stops everything and exits 130."""
    pexpect = pytest.importorskip("pexpect")
    root, env = tmpdir_env
    child = pexpect.spawn(DEMO, [build_dir], env=env, encoding="utf-8", timeout=30)
    try:
        child.expect(r"client:   1\.0 s")
        child.sendintr()
        child.expect(pexpect.EOF, timeout=20)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, child.before
    assert "demo: interrupted" in child.before
    assert_nothing_left(root)
