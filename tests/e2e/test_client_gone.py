"""Nothing stays loaded when preloadrun is killed.

The HSM service unloads what a process loaded once that process's last
connection closes (hsmsim(1)): a preloadrun killed with SIGKILL, while it
loads, while its command runs or while it reloads a cleared module, leaves
every module's object count where it was before it started, and the next
preloadrun starts clean. While preloadrun runs, in every mode, it keeps a
connection open and its tokens stay loaded. An application's own objects
(a session key made through the PKCS#11 module) go when it exits, and so do
the token and keys that the PKCS#11 module loads itself when an application
logs in without preloadrun (pkcs11-tool --login, run again and again, or a
client killed while it signs).
Fixtures: conftest.py (`pr_card`); helpers: preloadrun_support.py.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from preloadrun_support import PASS1, TIMEOUT, children_of, executable, wait_for


# -- helpers -------------------------------------------------------------------

def card_args(pr):
    return ["-s", "c1", "--passphrase-file", pr.card_pass]


def wait_objects(pr, expected, timeout=TIMEOUT):
    """Waits until `hsmsim module list` shows `expected` objects per module."""
    deadline = time.monotonic() + timeout
    while True:
        now = pr.module_objects()
        if now == expected:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"objects per module: {now}, expected {expected}; "
                        f"hsmsim log:\n{pr.sim.log()}")
        time.sleep(0.05)


def loaded(before):
    """One more object (the token) on every module."""
    return {n: count + 1 for n, count in before.items()}


def start(pr, *args):
    """preloadrun ARGS -- sleep 300 (stdout not read)."""
    return pr.start(*args, "--", "sleep", "300", stdout=subprocess.DEVNULL)


def wait_published(pr, p, tok):
    wait_for(lambda: os.path.exists(tok) or p.poll() is not None,
             what="the tokens file to be published")
    assert p.poll() is None, f"preloadrun exited {p.returncode}: {pr.stderr_of(p)}"


def kill_9(pr, p):
    # Its child outlives it here: killed at the end of the test.
    pr.pids.extend(pid for pid, _ in children_of(p.pid))
    p.send_signal(signal.SIGKILL)
    p.wait(TIMEOUT)


def wait_gone(pr, pid):
    """The service's log line for the client that has gone; how many objects
    it unloaded."""
    pattern = re.compile(rf"client pid {pid} \(uid {os.getuid()}\) has gone: "
                         r"unloaded (\d+) object\(s\)")
    match = wait_for(lambda: pattern.search(pr.sim.log()),
                     what=f"hsmsim to log that pid {pid} has gone")
    return int(match.group(1))


def starts_clean(pr, tok, before):
    """A new preloadrun on the same tokens file loads, runs, unloads, exits 0."""
    r = pr.run(*card_args(pr), "-f", tok, "--", "true")
    assert r.returncode == 0, r.stderr
    wait_objects(pr, before)


# -- kill -9 at each stage -------------------------------------------------------

def test_kill_9_while_loading(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    before = pr.module_objects()
    pr.sim.ok("module", "latency", "2", "5000")
    p = start(pr, *card_args(pr), "-f", tok)
    # Module 2 holds the token at once but answers after 5 s: preloadrun is
    # killed while it waits for that answer.
    wait_for(lambda: pr.module_objects() == loaded(before) or p.poll() is not None,
             what="the token loaded on both modules")
    assert p.poll() is None, pr.stderr_of(p)
    assert not os.path.exists(tok), "loading should still be under way"
    kill_9(pr, p)
    # The request under way ends (the latency passes), then its connection
    # closes: both tokens go.
    assert wait_gone(pr, p.pid) == len(before)
    wait_objects(pr, before)

    pr.sim.ok("module", "latency", "2", "0")
    starts_clean(pr, tok, before)


@pytest.mark.parametrize("ha", [[], ["--no-ha"]], ids=["ha", "no-ha"])
def test_kill_9_while_running(pr_card, ha):
    pr = pr_card
    tok = pr.tokens_file()
    before = pr.module_objects()
    p = start(pr, *card_args(pr), *ha, "-f", tok)
    wait_published(pr, p, tok)
    wait_objects(pr, loaded(before))
    kill_9(pr, p)
    assert wait_gone(pr, p.pid) == len(before)
    wait_objects(pr, before)
    # The tokens file it left is stale, and useless: its handles are gone.
    starts_clean(pr, tok, before)


def test_kill_9_during_a_reload(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    before = pr.module_objects()
    p = start(pr, "-v", *card_args(pr), "-f", tok)
    wait_published(pr, p, tok)
    wait_objects(pr, loaded(before))
    pr.sim.ok("module", "latency", "1", "5000")
    pr.sim.ok("module", "clear", "1")
    # Module 1 comes back at once (no initialisation delay) and preloadrun
    # loads the token onto it again, whose answer takes 5 s.
    wait_for(lambda: "module 1: initialising (generation 1) -> usable (generation 1)"
             in pr.stderr_of(p), what="preloadrun to see module 1 usable again")
    wait_for(lambda: pr.module_objects() == loaded(before), what="the reload to reach module 1")
    assert pr.stderr_of(p).count("module 1: 1 token(s) loaded") == 1, \
        "the reload should still be under way"
    assert p.poll() is None, pr.stderr_of(p)
    kill_9(pr, p)
    assert wait_gone(pr, p.pid) == len(before)
    wait_objects(pr, before)

    pr.sim.ok("module", "latency", "1", "0")
    starts_clean(pr, tok, before)


# -- alive, the tokens stay --------------------------------------------------------

@pytest.mark.parametrize("ha", [[], ["--no-ha"]], ids=["ha", "no-ha"])
@pytest.mark.parametrize("command", [True, False], ids=["command", "service-mode"])
def test_tokens_stay_loaded_while_preloadrun_runs(pr_card, ha, command):
    pr = pr_card
    tok = pr.tokens_file()
    before = pr.module_objects()
    if command:
        p = start(pr, *card_args(pr), *ha, "-f", tok)
    else:
        p = pr.start(*card_args(pr), *ha, "-f", tok, stdout=subprocess.DEVNULL)
    wait_published(pr, p, tok)
    wait_objects(pr, loaded(before))
    time.sleep(3)
    assert pr.module_objects() == loaded(before), pr.sim.log()
    assert p.poll() is None, pr.stderr_of(p)

    p.send_signal(signal.SIGTERM)
    status = p.wait(TIMEOUT)
    assert status == (143 if command else 0), pr.stderr_of(p)
    wait_objects(pr, before)


# -- the application's own objects ---------------------------------------------------

@pytest.mark.parametrize("end", ["C_Finalize", "kill -9"])
def test_an_applications_session_key_goes_when_it_ends(pr, end):
    driver = executable("P11_DRIVER")
    module = os.environ.get("PKCS11_MODULE", "")
    assert os.path.isfile(module), "PKCS11_MODULE: run these tests through ctest"
    before = pr.module_objects()
    # It generates a session key, then signs with it once per line read.
    app = subprocess.Popen([driver, "session-key", module, "2"], env=pr.env,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def sign():
        app.stdin.write("go\n")
        app.stdin.flush()
        assert app.stdout.readline().strip() == "rv=0x0"

    try:
        assert app.stdout.readline().strip() == "generated"
        wait_for(lambda: sum(pr.module_objects().values()) == sum(before.values()) + 1,
                 what="the session key on a module")
        time.sleep(2)  # idle meanwhile: the key stays
        sign()
        if end == "kill -9":
            app.kill()
        else:
            sign()  # the last one: then C_Finalize, and exit 0
        assert app.wait(TIMEOUT) == (0 if end == "C_Finalize" else -signal.SIGKILL)
        wait_objects(pr, before)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


# -- logging in without preloadrun ----------------------------------------------------

SANITIZED = os.environ.get("PRELOADRUN_SANITIZE") == "1"


def key_on_c1(pr):
    """An EC key of CKA_ID 01 protected by softcard c1."""
    pr.sim.ok("key", "generate", "--type", "ec-p256", "--label", "k1", "--id", "01",
              "--protect", "softcard:c1", "--passphrase-file", pr.card_pass)


@pytest.mark.skipif(SANITIZED, reason="pkcs11-tool cannot load a module built with "
                                      "AddressSanitizer")
@pytest.mark.parametrize("load_sharing", [False, True], ids=["one-module", "load-sharing"])
def test_pkcs11_tool_logins_without_preloadrun_leave_nothing_loaded(pr_card, load_sharing):
    pr = pr_card
    key_on_c1(pr)
    before = pr.module_objects()
    module = os.environ.get("PKCS11_MODULE", "")
    assert os.path.isfile(module), "PKCS11_MODULE: run these tests through ctest"
    env = pr.env
    if load_sharing:
        env["CKNFAST_LOADSHARING"] = "1"
    data = pr.path("data")
    with open(data, "w") as f:
        f.write("hello\n")
    for args in (["-O"], ["--sign", "--id", "01", "-m", "ECDSA-SHA256", "--input-file", data,
                          "--output-file", pr.path("sig")]) * 2:
        # The module logs in by loading c1 itself (no tokens file): the
        # token on each module it uses, and the key for a signature.
        p = subprocess.Popen(["pkcs11-tool", "--module", module, "--token-label", "c1",
                              "--login", "--pin", PASS1, *args],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = p.communicate(timeout=TIMEOUT)
        assert p.returncode == 0, out
        went = wait_gone(pr, p.pid)
        assert went >= 1, pr.sim.log()
        wait_objects(pr, before)


@pytest.mark.parametrize("end", ["C_Finalize", "kill -9"])
def test_a_client_logged_in_without_preloadrun_leaves_nothing_loaded(pr_card, end):
    pr = pr_card
    key_on_c1(pr)
    before = pr.module_objects()
    driver = executable("P11_DRIVER")
    module = os.environ.get("PKCS11_MODULE", "")
    assert os.path.isfile(module), "PKCS11_MODULE: run these tests through ctest"
    stop = pr.path("stop")
    # It logs in to c1 with its PIN and signs until `stop` exists.
    app = subprocess.Popen([driver, "sign-until", module, "c1", PASS1, "01", stop,
                            "2"], env=pr.env, stdout=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sum(pr.module_objects().values()) >= sum(before.values()) + 2
                 or app.poll() is not None, what="c1 and its key loaded by the client")
        assert app.poll() is None, app.stdout.read()
        if end == "kill -9":
            app.kill()
            assert app.wait(TIMEOUT) == -signal.SIGKILL
        else:
            open(stop, "w").close()
            assert app.wait(TIMEOUT) == 0
        assert wait_gone(pr, app.pid) >= 2
        wait_objects(pr, before)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
        app.stdout.close()
