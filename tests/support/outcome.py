"""Whether a test failed, for fixtures that keep what it left when it did.

A conftest.py imports pytest_runtest_makereport (pytest finds the hook by
its name there); failed(request) is then true in a fixture's teardown when
the test itself failed, and scratch_dir() makes a directory that is removed
at the end unless it did.
"""

import contextlib
import os
import shutil
import tempfile

import pytest


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def failed(request):
    """Whether the test of `request` failed (in a fixture's teardown)."""
    rep = getattr(request.node, "rep_call", None)
    return rep is not None and rep.failed


@contextlib.contextmanager
def scratch_dir(request, prefix, dir=None, mode=None):
    """A new directory (mkdtemp(prefix, dir), then chmod `mode` if given),
    removed at the end unless the test failed (then its path is printed)."""
    path = tempfile.mkdtemp(prefix=prefix, dir=dir)
    if mode is not None:
        os.chmod(path, mode)
    try:
        yield path
    finally:
        if failed(request):
            print(f"test failed: keeping {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)
