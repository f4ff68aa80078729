"""preloadrun as a supervisor, end to end (issue 11): the real preloadrun and
hsmsim, the probe (tests/support/probe.cpp) as the child.

- Every signal 1-64 but KILL and STOP sent to preloadrun reaches the child
  exactly once and none ends preloadrun (also as PID 1 of a PID namespace,
  signalled from outside); a broken stderr does not end it; killed with
  SIGKILL, it leaves its child a SIGTERM (PR_SET_PDEATHSIG).

Fixtures: conftest.py (`pr`, `pr_card`); helpers: preloadrun_support.py.
"""

import os
import resource
import shutil
import signal
import subprocess
import time

import pytest

from preloadrun_support import (TIMEOUT, children_of, proc_status, read_report, wait_for)

# A preloadrun that dies of a signal whose default is a core dump (SIGILL,
# SIGSEGV...) must not litter the source tree.
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

# Every signal a process can catch, by number: 32 and 33 (glibc's own),
# SIGRTMIN (34) to 64 included.
CATCHABLE = [n for n in range(1, 65) if n not in (signal.SIGKILL, signal.SIGSTOP)]
PER_SIGNAL = 3.0      # seconds for one forwarded signal to be counted
SETTLE = 0.3          # for late duplicates, before the final counts are read


# -- helpers -------------------------------------------------------------------

def signame(signo):
    if 34 <= signo <= 64:
        return f"SIGRTMIN+{signo - 34}" if signo < 50 else f"SIGRTMAX-{64 - signo}"
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def read_numeric_counts(path):
    """{15: 1, ...} from a probe --count-all file (empty when missing)."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                number, _, count = line.strip().partition("=")
                if number:
                    out[int(number)] = int(count)
    except FileNotFoundError:
        pass
    return out


def describe_counts(counts):
    return ", ".join(f"{signame(n)}={c}" for n, c in sorted(counts.items())) or "none"


def card_args(pr):
    return ["-s", "c1", "--passphrase-file", pr.card_pass]


def probe_files(pr):
    return {k: pr.fresh(k) for k in ("report", "counts", "ready", "until")}


def counting_probe(pr, files):
    """The probe counting every signal by number until files['until'] exists."""
    return [pr.probe, "--report", files["report"], "--count-all", files["counts"],
            "--ready", files["ready"], "--until-file", files["until"], "--sleep-ms", "90000"]


def wait_ready(pr, p, files):
    wait_for(lambda: os.path.exists(files["ready"]) or p.poll() is not None,
             what="the probe to be ready")
    assert p.poll() is None, f"preloadrun exited {p.returncode}: {pr.stderr_of(p)}"


def finish(p, what="preloadrun", timeout=TIMEOUT):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} did not exit within {timeout}s")


def the_child(p):
    kids = wait_for(lambda: children_of(p.pid), what="preloadrun's child")
    assert len(kids) == 1, kids
    return kids[0][0]


def running(pid):
    """Alive and not a zombie."""
    st = proc_status(pid)
    return st is not None and not st.get("State", "").startswith("Z")


def send_one_at_a_time(target, counts_path, alive, who):
    """Sends every catchable signal to `target` in turn, each once the
    previous one has been counted (standard signals do not merge), with
    `alive()` true throughout; then every count must be exactly 1."""
    for signo in CATCHABLE:
        os.kill(target, signo)
        try:
            wait_for(lambda: read_numeric_counts(counts_path).get(signo) or not alive(),
                     timeout=PER_SIGNAL, what=f"{signame(signo)} to reach the child")
        except AssertionError:
            pytest.fail(f"{signame(signo)} ({signo}) sent to {who} did not reach the child "
                        f"within {PER_SIGNAL}s; the child got: "
                        f"{describe_counts(read_numeric_counts(counts_path))}")
        assert alive(), (f"{who} ended on {signame(signo)} ({signo}); the child got: "
                         f"{describe_counts(read_numeric_counts(counts_path))}")
    time.sleep(SETTLE)
    assert alive(), f"{who} ended after the last signal"
    counts = read_numeric_counts(counts_path)
    wrong = {n: c for n, c in counts.items() if c != 1 or n not in CATCHABLE}
    assert not wrong and sorted(counts) == CATCHABLE, \
        f"each signal once expected; not once: {describe_counts(wrong)}"


def assert_cleaned_up(pr, tok):
    assert not os.path.lexists(tok), "tokens file left behind"
    assert not os.path.lexists(tok + ".lock"), "tokens file lock left behind"
    objects = pr.module_objects()
    assert all(n == 0 for n in objects.values()), f"objects left on modules: {objects}"


# -- 1. every signal reaches the child once; none ends preloadrun --------------

def test_every_signal_reaches_the_child_once_and_none_ends_preloadrun(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    files = probe_files(pr)
    p = pr.start(*card_args(pr), "-f", tok, "--", *counting_probe(pr, files),
                 stdout=subprocess.DEVNULL)
    wait_ready(pr, p, files)
    assert pr.check(tok).returncode == 0
    send_one_at_a_time(p.pid, files["counts"], lambda: p.poll() is None,
                       f"preloadrun {p.pid}")
    assert pr.check(tok).returncode == 0, "the tokens file is no longer live"
    open(files["until"], "w").close()
    assert finish(p) == 0, pr.stderr_of(p)
    assert_cleaned_up(pr, tok)


def test_as_pid_1_every_signal_from_outside_reaches_the_child_once(pr_card):
    """The container case: preloadrun is PID 1 of a PID namespace, the
    signals come from the root namespace (as `docker kill -s`), PIPE and PWR
    included; a PID 1 without a handler would never see them."""
    pr = pr_card
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    tok = pr.tokens_file()
    files = probe_files(pr)
    argv = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
            pr.bin, *card_args(pr), "-f", tok, "--", *counting_probe(pr, files)]
    log_path = pr.fresh("stderr")
    with open(log_path, "wb") as log:
        unshare = subprocess.Popen(argv, env=pr.env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=log,
                                   start_new_session=True)
    unshare.stderr_path = log_path
    pr.procs.append(unshare)     # killed at the end, with PID 1 and its namespace
    wait_ready(pr, unshare, files)
    init = int(open(f"/proc/{unshare.pid}/task/{unshare.pid}/children").read().split()[0])
    assert proc_status(init)["NSpid"].split()[-1] == "1", "preloadrun is not PID 1"
    assert read_report(files["report"])["ppid"] == "1"

    send_one_at_a_time(init, files["counts"], lambda: running(init),
                       f"preloadrun (PID 1, host pid {init})")
    open(files["until"], "w").close()
    assert finish(unshare, "unshare") == 0, pr.stderr_of(unshare)
    assert_cleaned_up(pr, tok)


def test_a_broken_stderr_does_not_end_preloadrun(pr_card):
    """As `preloadrun ... 2>&1 >/dev/null | head -n 3`: the reader of
    preloadrun's stderr goes away, then preloadrun logs (a module cleared,
    the token reloaded on it): it writes to a pipe nobody reads."""
    pr = pr_card
    tok = pr.tokens_file()
    files = probe_files(pr)
    p = pr.start(*card_args(pr), "-f", tok, "--", pr.probe, "--ready", files["ready"],
                 "--until-file", files["until"], "--sleep-ms", "60000",
                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_ready(pr, p, files)
    child = the_child(p)
    p.stderr.close()
    for module in (1, 2):
        before = pr.load(tok)["generation"]
        pr.sim.ok("module", "clear", module)

        def reloaded():
            data = pr.load(tok)
            return (data["generation"] > before
                    and all(len(t["loaded"]) == 2 for t in data["tokens"]))
        wait_for(lambda: p.poll() is not None or reloaded(),
                 what=f"the token reloaded on module {module}")
        assert p.poll() is None, f"preloadrun exited {p.returncode} with its stderr broken"
    time.sleep(SETTLE)
    assert p.poll() is None, f"preloadrun exited {p.returncode} with its stderr broken"
    assert running(child), "the child ended"
    r = pr.check(tok)
    assert r.returncode == 0, f"the tokens file is not live: {r.stdout} {r.stderr}"
    open(files["until"], "w").close()
    assert finish(p) == 0


def test_killed_preloadrun_leaves_its_child_a_sigterm_and_a_stale_file(pr_card):
    """SIGKILL gives preloadrun no chance to act: the kernel sends the child
    SIGTERM (PR_SET_PDEATHSIG), and the tokens file stays behind, stale."""
    pr = pr_card
    tok = pr.tokens_file()
    files = probe_files(pr)
    p = pr.start(*card_args(pr), "-f", tok, "--", *counting_probe(pr, files),
                 stdout=subprocess.DEVNULL)
    wait_ready(pr, p, files)
    child = the_child(p)
    pr.pids.append(child)        # it blocks SIGTERM: killed at the end
    p.kill()
    p.wait()
    try:
        wait_for(lambda: read_numeric_counts(files["counts"]), timeout=2.0,
                 what="a signal to the child")
    except AssertionError:
        pytest.fail("the child got no signal within 2 s of preloadrun's SIGKILL")
    time.sleep(SETTLE)
    counts = read_numeric_counts(files["counts"])
    assert counts == {signal.SIGTERM: 1}, f"SIGTERM once expected: {describe_counts(counts)}"
    r = pr.check(tok)
    assert r.returncode != 0, "check says a killed preloadrun's file is live"
    assert "dead" in r.stderr, r.stderr
    open(files["until"], "w").close()
