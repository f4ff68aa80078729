"""Shared by the Python tests (e2e, pty, completions, docs) and the
benchmarks: the programs under test, named by ctest in the environment, the
first line a starting service prints (hsmsim's ready line) read without
blocking forever, waiting for a condition, environments and users to run
commands with."""

import os
import selectors
import time


def executable(var):
    """The path in environment variable VAR, which must be an executable file
    (a pytest failure otherwise)."""
    import pytest

    path = os.environ.get(var)
    if not path:
        pytest.fail(f"{var} is not set: run these tests through ctest "
                    f"(or set {var}=/path/to/it)")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{var}={path} is not an executable file")
    return path


def read_first_line(proc, timeout=10.0):
    """The first line `proc` writes to its stdout pipe, or None when it
    closes the pipe or `timeout` seconds pass first."""
    return read_first_line_and_rest(proc, timeout)[0]


def read_first_line_and_rest(proc, timeout=10.0):
    """(first line, the lines read along with it) from `proc`'s stdout pipe;
    (None, []) when it closes the pipe or `timeout` seconds pass first."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return None, []
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                return None, []
            data += chunk
    finally:
        sel.close()
    first, rest = data.decode(errors="replace").split("\n", 1)
    return first, rest.splitlines()


def run_as_argv(uid, gid, groups=()):
    """argv prefix that runs a command as `uid`, primary group `gid` and the
    supplementary groups `groups` (none: cleared), with no capabilities
    left to inherit."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}"]
    argv += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return argv + ["--inh-caps=-all", "--"]


def wait_for(predicate, timeout=15.0, what="condition", interval=0.02):
    """Calls predicate() every `interval` seconds until it returns something
    true, and returns that. After `timeout` seconds, an AssertionError naming
    `what` (a string, or a function that returns one)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for "
                                 f"{what() if callable(what) else what}")
        time.sleep(interval)


def env_with(env, **changes):
    """A copy of `env` with `changes` made: a value of None removes the
    variable."""
    out = dict(env)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command name: [state, ppid,
    pgrp, session, ...] (field N of proc(5) is [N - 3]); None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def proc_status(pid):
    """/proc/PID/status as a dict (None when the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    except OSError:
        return None


def processes():
    """(pid, proc_stat(pid)) of every process there is."""
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = proc_stat(name)
            if fields is not None:
                yield int(name), fields


def children_of(pid):
    """[(child pid, state letter)] of the processes whose parent is PID."""
    return [(child, fields[0]) for child, fields in processes() if int(fields[1]) == pid]
