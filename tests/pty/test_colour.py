"""Colours only on a terminal, and never with NO_COLOR: preloadrun's and
hsmsim's log lines on stderr, through a real pseudo-terminal."""

import os
import subprocess

import pexpect
import pytest

ESC = "\x1b["


def on_terminal(argv, env):
    """Runs argv with stdin/stdout/stderr on a pty; returns what it printed."""
    child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=15)
    child.expect(pexpect.EOF)
    child.close()
    return child.before, child.exitstatus


def env_with(**extra):
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(extra)
    return env


@pytest.fixture
def preloadrun_argv(hsm_service):
    return [os.environ["PRELOADRUN"], "--socket", hsm_service, "--", "true"]


def test_preloadrun_log_is_coloured_on_a_terminal(preloadrun_argv):
    out, status = on_terminal(preloadrun_argv, env_with(TERM="xterm"))
    assert status == 0, out
    assert "tokens file" in out and ESC in out, repr(out)


@pytest.mark.parametrize("value", ["1", "yes", "0"])
def test_no_color_turns_colours_off(preloadrun_argv, value):
    # Any non-empty value counts (https://no-color.org), even "0".
    out, status = on_terminal(preloadrun_argv, env_with(TERM="xterm", NO_COLOR=value))
    assert status == 0, out
    assert "tokens file" in out and ESC not in out, repr(out)


def test_empty_no_color_is_unset(preloadrun_argv):
    out, _ = on_terminal(preloadrun_argv, env_with(TERM="xterm", NO_COLOR=""))
    assert ESC in out, repr(out)


def test_not_coloured_when_stderr_is_not_a_terminal(preloadrun_argv):
    r = subprocess.run(preloadrun_argv, env=env_with(TERM="xterm"), capture_output=True,
                       text=True, timeout=15)
    assert r.returncode == 0, r.stderr
    assert "tokens file" in r.stderr and ESC not in r.stderr, repr(r.stderr)


def test_hsmsim_errors_are_plain_text():
    # A one-line error is plain text on a terminal too: it may be copied
    # into a ticket or a search box.
    out, status = on_terminal([os.environ["HSMSIM"], "--socket", "/nonexistent.sock",
                               "module", "list"], env_with(TERM="xterm"))
    assert status == 3 and "cannot reach the HSM service" in out and ESC not in out, repr(out)
