"""preloadrun as a supervisor, end to end: the real preloadrun and
hsmsim, the probe (tests/support/probe.cpp) as the child.

- Every signal 1-64 but KILL and STOP sent to preloadrun reaches the child
  exactly once and none ends preloadrun (also as PID 1 of a PID namespace,
  signalled from outside); a broken stderr does not end it; killed with
  SIGKILL, it leaves its child a SIGTERM (PR_SET_PDEATHSIG).
- The caller's descriptors reach the child, preloadrun's own and the
  passphrase descriptor do not; socket activation (LISTEN_PID) works through.
- Exit statuses where the command cannot run as env(1) gives them.
- The signals the caller ignores stay ignored, in preloadrun and the child.
- --process-group signals the child's whole process group.

Fixtures: conftest.py (`pr`, `pr_card`); helpers: preloadrun_support.py.
"""

import os
import resource
import shutil
import signal
import socket
import subprocess
import time

import pytest

from preloadrun_support import (PASS1, PY, TIMEOUT, children_of, error_lines, proc_status,
                                read_counts, read_report, wait_for)

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
    return read_counts(path, key=int)


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


def start_counting(pr, tok, files, **kw):
    """preloadrun with the card, tokens file `tok`, the counting probe as
    its child; returns once the probe is ready."""
    p = pr.start(*card_args(pr), "-f", tok, "--", *counting_probe(pr, files),
                 stdout=subprocess.DEVNULL, **kw)
    wait_ready(pr, p, files)
    return p


def wait_ready(pr, p, files):
    """Waits for the probe under `p`; its children are killed at the end
    even if `p` is gone by then (a preloadrun ended by a signal)."""
    wait_for(lambda: os.path.exists(files["ready"]) or p.poll() is not None,
             what="the probe to be ready")
    assert p.poll() is None, f"preloadrun exited {p.returncode}: {pr.stderr_of(p)}"
    pr.pids.extend(pid for pid, _ in children_of(p.pid))


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
    p = start_counting(pr, tok, files)
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
    p = start_counting(pr, tok, files)
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


# -- 2. inherited descriptors pass to the child --------------------------------

# Places descriptors, then executes a command: TARGET=PATH opens PATH
# (read-only) as fd TARGET, TARGET=&N moves inherited fd N to TARGET; the
# placed fds are inheritable (no close-on-exec), nothing else is.
FD_PLACER = """
import fcntl, os, sys
args = sys.argv[1:]
sep = args.index("--")
staged = []
for spec in args[:sep]:
    target, source = spec.split("=", 1)
    if source.startswith("&"):
        fd = int(source[1:])
    else:
        fd = os.open(source, os.O_RDONLY)
    staged.append((int(target), fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100)))
    os.close(fd)
for target, fd in staged:
    os.dup2(fd, target)
os.execvp(args[sep + 1], args[sep + 1:])
"""


def with_fds(placed, argv):
    """(command, pass_fds): runs argv with the descriptors `placed`
    ({target fd: path or an int, an fd of ours}) and only those above 2."""
    specs = [f"{t}={'&' + str(s) if isinstance(s, int) else s}" for t, s in placed.items()]
    passed = tuple(s for s in placed.values() if isinstance(s, int))
    return [PY, "-c", FD_PLACER, *specs, "--", *argv], passed


def run_with_fds(pr, placed, argv, env=None):
    cmd, passed = with_fds(placed, argv)
    return subprocess.run(cmd, env=env or pr.env, pass_fds=passed, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_inherited_descriptors_reach_the_child_as_through_env(pr_card):
    """fd 3 on a file, fd 5 the write end of a pipe (fd 4 closed): the child
    has exactly 0, 1, 2, 3 and 5, as under env(1), none of preloadrun's own
    (lock file, sockets, signalfd...), and writes through the pipe."""
    pr = pr_card
    tok = pr.tokens_file()
    data = pr.path("inherited.txt")
    with open(data, "w") as f:
        f.write("inherited\n")
    rd, wr = os.pipe()
    try:
        reports = {}
        for via in ("env", "preloadrun"):
            report = pr.fresh("report")
            front = ["env"] if via == "env" else [pr.bin, *card_args(pr), "-f", tok, "--"]
            r = run_with_fds(pr, {3: data, 5: wr}, [*front, pr.probe, "--report", report])
            assert r.returncode == 0, f"{via}: {r.stderr}"
            reports[via] = read_report(report)
        env_fds, got = reports["env"], reports["preloadrun"]
        assert env_fds["fds"] == "0,1,2,3,5", env_fds
        assert got["fds"] == env_fds["fds"], \
            f"the child's descriptors: {got['fds']} (under env: {env_fds['fds']})"
        assert got["fd.3"] == data, got["fd.3"]
        assert got["fd.5"] == f"pipe:[{os.fstat(wr).st_ino}]", got["fd.5"]

        r = run_with_fds(pr, {5: wr}, [pr.bin, *card_args(pr), "-f", tok, "--",
                                       "sh", "-c", "echo written-by-the-child >&5"])
        assert r.returncode == 0, r.stderr
        os.close(wr)
        wr = -1
        with os.fdopen(rd, "rb") as pipe:
            rd = -1
            assert pipe.read() == b"written-by-the-child\n"
    finally:
        for fd in (rd, wr):
            if fd >= 0:
                os.close(fd)
    assert not os.path.lexists(tok)


def test_passphrase_descriptor_is_consumed_not_passed(pr_card):
    """--passphrase-fd 4: preloadrun reads it and keeps it from the child,
    which still gets the caller's fd 3."""
    pr = pr_card
    data = pr.path("inherited.txt")
    with open(data, "w") as f:
        f.write("inherited\n")
    rd, wr = os.pipe()
    os.write(wr, f"{PASS1}\n".encode())
    os.close(wr)
    report = pr.fresh("report")
    try:
        r = run_with_fds(pr, {3: data, 4: rd},
                         [pr.bin, "-s", "c1", "--passphrase-fd", "4", "--",
                          pr.probe, "--report", report])
    finally:
        os.close(rd)
    assert r.returncode == 0, r.stderr
    got = read_report(report)
    assert got["fds"] == "0,1,2,3", \
        f"the child's descriptors: {got['fds']} (0,1,2 and the caller's 3 expected)"
    assert got["fd.3"] == data


def _activation_env(pr):
    # systemd-socket-activate gives its child only TERM, PATH, USER, HOME,
    # LISTEN_* and what -E names.
    env = pr.env
    names = ["NFAST_KMDATA", "HSMSIM_SOCKET", "HSMSIM_ADMIN_SOCKET", "XDG_RUNTIME_DIR",
             "NO_COLOR", "LC_ALL"]
    return env, [f"--setenv={name}" for name in names if name in env]


def test_socket_activation_through_preloadrun(pr):
    """systemd-socket-activate -l PATH preloadrun -- probe: the child gets
    the listening socket as fd 3, LISTEN_FDS as set, and LISTEN_PID naming
    itself (it named preloadrun)."""
    activate = shutil.which("systemd-socket-activate")
    if activate is None:
        pytest.fail("systemd-socket-activate is needed")
    env, setenv = _activation_env(pr)
    sock_path = pr.path("act.sock")
    files = probe_files(pr)
    argv = [activate, "--listen", sock_path, *setenv, pr.bin, "-q", "--",
            pr.probe, "--report", files["report"], "--ready", files["ready"],
            "--until-file", files["until"], "--sleep-ms", "60000"]
    log_path = pr.fresh("stderr")
    with open(log_path, "wb") as log:
        p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    p.stderr_path = log_path
    pr.procs.append(p)
    wait_for(lambda: os.path.exists(sock_path) or p.poll() is not None,
             what="the socket to listen")
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(sock_path)    # the first connection starts preloadrun
        wait_ready(pr, p, files)
        got = read_report(files["report"])
    finally:
        client.close()
    assert int(got["ppid"]) == p.pid
    assert got["env"].get("LISTEN_FDS") == "1", got["env"]
    assert got["env"].get("LISTEN_PID") == got["pid"], \
        f"LISTEN_PID={got['env'].get('LISTEN_PID')} in the child, pid {got['pid']}"
    assert got["fds"] == "0,1,2,3", got["fds"]
    assert got["listening"] == "3", f"fd 3 is not a listening socket: {got['fd.3']}"
    open(files["until"], "w").close()
    assert finish(p) == 0, pr.stderr_of(p)


def test_listen_pid_of_another_process_is_passed_unchanged(pr):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(pr.path("l.sock"))
    listener.listen()
    env = pr.env
    env["LISTEN_FDS"] = "1"
    env["LISTEN_PID"] = str(os.getpid())
    report = pr.fresh("report")
    try:
        r = run_with_fds(pr, {3: listener.fileno()},
                         [pr.bin, "-q", "--", pr.probe, "--report", report], env=env)
    finally:
        listener.close()
    assert r.returncode == 0, r.stderr
    got = read_report(report)
    assert got["env"].get("LISTEN_PID") == str(os.getpid()), got["env"]
    assert got["env"].get("LISTEN_FDS") == "1", got["env"]
    assert got["fds"] == "0,1,2,3", f"the child's descriptors: {got['fds']}"
    assert got["listening"] == "3", f"fd 3 is not a listening socket: {got['fd.3']}"


# -- 3. exit statuses as env(1) ------------------------------------------------

def _script(pr, name, text):
    path = pr.path(name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path


def stack_limit(size):
    """A preexec_fn setting the soft stack limit to `size` (or the hard one)."""
    def preexec():
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        resource.setrlimit(resource.RLIMIT_STACK,
                           (size if hard == resource.RLIM_INFINITY else min(size, hard), hard))
    return preexec


EXECVE = {"x86_64": 59, "aarch64": 221}


def past_exec(pid):
    """True once `pid` is blocked in a system call that is not its execve:
    until execve returns, the kernel may still reset the stack limit to the
    one execve started with (as Popen returns when close-on-exec descriptors
    are closed, inside execve)."""
    machine = os.uname().machine
    if machine not in EXECVE:
        pytest.fail(f"execve's system call number on {machine} is not known to this test")
    with open(f"/proc/{pid}/syscall") as f:
        fields = f.read().split()
    return fields[0] != "running" and int(fields[0]) != EXECVE[machine]


def assert_one_preloadrun_line(stderr):
    lines = error_lines(stderr)
    assert len(lines) == 1 and lines[0].startswith("preloadrun: "), \
        f"one 'preloadrun: ...' line expected on stderr, got {stderr!r}"


def test_missing_interpreter_is_127_as_env(pr):
    script = _script(pr, "bad-interpreter", "#!/nonexistent/interpreter\nexit 0\n")
    e = subprocess.run(["env", script], capture_output=True, text=True, timeout=TIMEOUT)
    assert e.returncode == 127, e
    r = pr.run("-q", "--", script)
    assert r.returncode == e.returncode, f"env: {e.returncode}, preloadrun: {r.returncode}; " \
                                         f"{r.stderr}"
    assert_one_preloadrun_line(r.stderr)


def test_script_without_interpreter_line_runs_through_sh_as_env(pr):
    script = _script(pr, "no-shebang", 'echo "ran by sh: $0 $1"\nexit 7\n')
    e = subprocess.run(["env", script, "arg"], capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert (e.returncode, e.stdout) == (7, f"ran by sh: {script} arg\n"), e
    r = pr.run("-q", "--", script, "arg")
    assert (r.returncode, r.stdout) == (e.returncode, e.stdout), \
        f"env: {e.returncode} {e.stdout!r}, preloadrun: {r.returncode} {r.stdout!r}; {r.stderr}"
    assert error_lines(r.stderr) == [], r.stderr


def test_argument_list_too_long_is_126_as_env(pr_card):
    """E2BIG. env: one argument beyond MAX_ARG_STRLEN (131072), made by its
    own -S ${VAR} expansion. preloadrun: a total beyond the limit the stack
    size sets (a quarter of it, at least 128 KiB): 480 kB of arguments are
    fine for preloadrun's own start (8 MiB stack) and too long for the
    child's once preloadrun's stack limit is lowered to 1 MiB, while it waits
    for the passphrase (it has not started the child yet)."""
    pr = pr_card
    env = pr.env
    env["BIG"] = "x" * 70000
    e = subprocess.run(["env", "-S", "true ${BIG}${BIG}"], env=env, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert e.returncode == 126, e

    tok = pr.tokens_file()
    rd, wr = os.pipe()
    try:
        p = pr.start("-q", "-s", "c1", "--passphrase-fd", str(rd), "-f", tok, "--",
                     "true", *["y" * 120000] * 4, pass_fds=(rd,), stdout=subprocess.DEVNULL,
                     preexec_fn=stack_limit(8 << 20))
        os.close(rd)
        rd = -1
        wait_for(lambda: past_exec(p.pid), what="preloadrun to be past its execve")
        _, hard = resource.getrlimit(resource.RLIMIT_STACK)
        resource.prlimit(p.pid, resource.RLIMIT_STACK, (1 << 20, hard))
        os.write(wr, f"{PASS1}\n".encode())
    finally:
        for fd in (rd, wr):
            if fd >= 0:
                os.close(fd)
    status = finish(p)
    stderr = pr.stderr_of(p)
    assert status == e.returncode, f"env: {e.returncode}, preloadrun: {status}; {stderr}"
    assert_one_preloadrun_line(stderr)
    assert_cleaned_up(pr, tok)


# -- 4. the caller's ignored signals are kept ----------------------------------

def caller_ignoring(*signos):
    """A preexec_fn: every disposition default, then `signos` ignored (as
    nohup, or a shell starting a job with &, leaves them)."""
    def preexec():
        for n in range(1, signal.NSIG):
            try:
                signal.signal(n, signal.SIG_DFL)
            except (OSError, ValueError, RuntimeError):
                pass  # KILL, STOP, glibc's 32 and 33
        for n in signos:
            signal.signal(n, signal.SIG_IGN)
    return preexec


@pytest.mark.parametrize("ignored", ["HUP", "INT"])
def test_signal_ignored_by_the_caller_stays_ignored(pr_card, ignored):
    """As under nohup (HUP) or for a job a non-interactive shell starts with
    & (INT): the signal sent to preloadrun is not passed on, the child starts
    with it ignored and every other signal default; others still pass."""
    pr = pr_card
    signo = signal.Signals["SIG" + ignored]
    tok = pr.tokens_file()
    files = probe_files(pr)
    p = start_counting(pr, tok, files, preexec_fn=caller_ignoring(signo))
    report = read_report(files["report"])
    assert report["sigign"] == f"{1 << (signo - 1):016x}", \
        f"the child's ignored signals: {report['sigign']} (only SIG{ignored} expected)"
    os.kill(p.pid, signo)
    os.kill(p.pid, signal.SIGUSR1)   # not ignored: passed on
    wait_for(lambda: read_numeric_counts(files["counts"]).get(signal.SIGUSR1) or
             p.poll() is not None, what="SIGUSR1 to reach the child")
    time.sleep(SETTLE)
    counts = read_numeric_counts(files["counts"])
    assert counts == {signal.SIGUSR1: 1}, \
        f"only SIGUSR1 expected in the child: {describe_counts(counts)}"
    assert p.poll() is None, f"preloadrun exited {p.returncode}"
    open(files["until"], "w").close()
    assert finish(p) == 0, pr.stderr_of(p)
    assert_cleaned_up(pr, tok)


# -- 5. --process-group --------------------------------------------------------

PIPELINE = "sleep 300 | sleep 300 | sleep 300"


def descendants(pid):
    out = []
    for child, _ in children_of(pid):
        out.append(child)
        out.extend(descendants(child))
    return out


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _supervise_pipeline(pr, front):
    """Starts FRONT -- sh -c PIPELINE; returns (popen, the 3 sleeps)."""
    log_path = pr.fresh("stderr")
    with open(log_path, "wb") as log:
        p = subprocess.Popen([*front, "--", "sh", "-c", PIPELINE], env=pr.env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             start_new_session=True)
    p.stderr_path = log_path
    pr.procs.append(p)

    def sleeps():
        return [pid for pid in descendants(p.pid) if comm(pid) == "sleep"]
    wait_for(lambda: p.poll() is not None or len(sleeps()) == 3,
             what="the pipeline's 3 sleeps")
    found = sleeps()
    pr.pids.extend(found)        # killed at the end if still there
    assert p.poll() is None and len(found) == 3, \
        f"{front[0]} exited {p.returncode}: {pr.stderr_of(p)}"
    return p, found


def _tini():
    tini = shutil.which("tini")
    if tini is None:
        pytest.fail("tini is needed (the reference for these behaviours)")
    return tini


@pytest.mark.parametrize("supervisor", ["preloadrun", "tini"])
def test_process_group_option_signals_the_whole_pipeline(pr, supervisor):
    """--process-group (tini's -g): SIGTERM to the supervisor reaches every
    process of the child's group: the three sleeps end, status 143."""
    front = [pr.bin, "-q", "--process-group"] if supervisor == "preloadrun" \
        else [_tini(), "-g"]
    p, sleeps = _supervise_pipeline(pr, front)
    os.kill(p.pid, signal.SIGTERM)
    assert finish(p, supervisor) == 143, pr.stderr_of(p)
    wait_for(lambda: not any(running(pid) for pid in sleeps), timeout=5,
             what="every sleep of the pipeline to end")


@pytest.mark.parametrize("supervisor", ["preloadrun", "tini"])
def test_by_default_only_the_child_is_signalled(pr, supervisor):
    """Without the option (as tini without -g) SIGTERM goes to sh alone: sh
    dies of it (status 143), its sleeps live on."""
    front = [pr.bin, "-q"] if supervisor == "preloadrun" else [_tini()]
    p, sleeps = _supervise_pipeline(pr, front)
    os.kill(p.pid, signal.SIGTERM)
    assert finish(p, supervisor) == 143, pr.stderr_of(p)
    time.sleep(SETTLE)
    assert all(running(pid) for pid in sleeps), \
        f"the sleeps were signalled too: {[(pid, running(pid)) for pid in sleeps]}"
