"""Shared by the Python tests (e2e, pty, completions) and the benchmarks: the
programs under test, named by ctest in the environment, and the first line a
starting service prints (hsmsim's ready line), read without blocking forever."""

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
