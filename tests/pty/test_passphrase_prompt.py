"""The terminal passphrase prompt of preloadrun and hsmsim under job control,
in an interactive bash with line editing (readline keeps the terminal in raw
mode while the shell has it) on a pseudo-terminal:

- started in the background (`&`), the program stops until `fg`, then asks
  with the terminal's own settings: Enter ("\\r") ends the line;
- Ctrl-Z in the middle of the prompt, `bg`, `fg`: the question is asked
  again, with echo off, and no byte of the passphrase ever shows;
- every way out (Enter, Ctrl-C, Ctrl-\\, Ctrl-D, a wrong passphrase, SIGTERM,
  SIGHUP) leaves the terminal settings as they were before. These run under
  a non-interactive `bash -c` inside the interactive one: an interactive bash
  puts its own settings back after a job dies of a signal, which would hide
  a prompt that does not.
"""

import os
import re
import shlex
import signal
import subprocess
import time

import pytest

from procs import executable, proc_stat, wait_for
from pty_shell import shell_fixture

TIMEOUT = 15
PROMPT = "PROMPTTEST> "
# Distinct enough never to appear in the output by chance.
PASSPHRASE = "Zq7-kestrel-Wx9"
PART = PASSPHRASE[:6]


shell = shell_fixture(prompt=PROMPT, timeout=TIMEOUT, columns=500,
                     env={"HSMSIM_SOCKET": None, "HSMSIM_ADMIN_SOCKET": None,
                          "NFAST_NFKM_TOKENSFILE": None})


@pytest.fixture
def tools(hsm_service):
    return {"preloadrun": executable("PRELOADRUN"), "hsmsim": executable("HSMSIM"),
            "socket": hsm_service}


def passphrase_file(workdir, text=PASSPHRASE):
    path = os.path.join(workdir, "pp")
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, 0o600)
    return path


def create_softcard(tools, workdir, name):
    subprocess.run([tools["hsmsim"], "--socket", tools["socket"], "softcard", "create", name,
                    "--passphrase-file", passphrase_file(workdir)],
                   check=True, stdout=subprocess.DEVNULL)


def unique(prefix):
    return f"{prefix}{os.getpid()}x{time.monotonic_ns() % 10**9}"


def unlocks(tools, workdir, card):
    """Whether PASSPHRASE unlocks softcard `card` (preloadrun loads it)."""
    result = subprocess.run([tools["preloadrun"], "-q", "--socket", tools["socket"], "-s", card,
                             "--passphrase-file", passphrase_file(workdir), "--", "true"],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return result.returncode == 0


def service_mode(tools, workdir, card):
    """The documented service-mode command line (no passphrase file)."""
    tokens = os.path.join(workdir, "tokens.json")
    env_file = os.path.join(workdir, "env")
    line = shlex.join([tools["preloadrun"], "-q", "--socket", tools["socket"], "-s", card,
                       "-f", tokens]) + " > " + shlex.quote(env_file)
    return line, tokens, env_file


def wait_loaded(tokens, env_file):
    def published():
        try:
            with open(env_file) as f:
                return os.path.exists(tokens) and "preloadrun pid" in f.read()
        except FileNotFoundError:
            return False
    wait_for(published, what="the tokens file and the shell lines")


def assert_never_shown(shell):
    shown = shell.output()
    assert PART not in shown, "the passphrase was echoed"


def test_background_service_mode_waits_for_fg_and_enter_ends_the_line(shell, tools, workdir):
    card = unique("bg")
    create_softcard(tools, workdir, card)
    before = shell.stty()
    line, tokens, env_file = service_mode(tools, workdir, card)

    shell.run(line + " &")
    shell.p.expect("Stopped")  # waits for the foreground
    shell.sync()
    assert not os.path.exists(tokens)
    shell.run("fg")
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")
    shell.p.send(PASSPHRASE + "\r")
    wait_loaded(tokens, env_file)

    shell.p.send("\x03")  # Ctrl-C ends service mode: 0, tokens unloaded
    shell.prompt()
    assert shell.status() == 0
    assert not os.path.exists(tokens)
    assert shell.stty() == before
    assert_never_shown(shell)
    shell.close()


def test_ctrl_z_bg_fg_in_the_middle_asks_again_without_echo(shell, tools, workdir):
    card = unique("tstp")
    create_softcard(tools, workdir, card)
    before = shell.stty()
    line, tokens, env_file = service_mode(tools, workdir, card)

    shell.run(line)
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")
    shell.p.send(PART)
    shell.p.send("\x1a")  # Ctrl-Z
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("bg")
    # Continued in the background: it stops again rather than touch the
    # terminal the shell has.
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("fg")
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")  # asked again
    shell.p.send(PASSPHRASE + "\r")
    wait_loaded(tokens, env_file)

    shell.p.send("\x03")
    shell.prompt()
    assert shell.status() == 0
    assert shell.stty() == before
    assert_never_shown(shell)
    shell.close()


def test_service_mode_after_the_prompt_stops_on_ctrl_z_and_runs_on_with_bg(shell, tools,
                                                                            workdir):
    card = unique("svcz")
    create_softcard(tools, workdir, card)
    line, tokens, env_file = service_mode(tools, workdir, card)
    shell.run(line)
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")
    shell.p.send(PASSPHRASE + "\r")
    wait_loaded(tokens, env_file)

    shell.p.send("\x1a")  # Ctrl-Z: the shell gets its terminal back
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("bg")  # keeps the tokens loaded in the background
    shell.sync()
    r = subprocess.run([tools["preloadrun"], "check", tokens], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    shell.run("kill %1; wait %1")
    shell.prompt()
    assert shell.status() == 0
    assert not os.path.exists(tokens)
    shell.close()


def test_stopped_by_sigstop_and_continued_in_the_foreground_goes_on(shell, tools, workdir):
    card = unique("stop")
    create_softcard(tools, workdir, card)
    line, tokens, env_file = service_mode(tools, workdir, card)
    shell.run(line + " & echo JOB=$((0+1))$!")
    shell.p.expect(r"JOB=1(\d+)")
    pid = int(shell.p.match.group(1))
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("fg")
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")
    # SIGSTOP cannot be caught: the shell takes the terminal back and puts
    # its own settings (echo on) in place; fg continues preloadrun, which
    # must turn echo off again before it reads a byte.
    os.kill(pid, signal.SIGSTOP)
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("fg")
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")
    shell.p.send(PASSPHRASE + "\r")
    wait_loaded(tokens, env_file)
    shell.p.send("\x03")
    shell.prompt()
    assert shell.status() == 0
    assert_never_shown(shell)
    shell.close()


def run_wrapped(shell, workdir, command):
    """Runs `command` in a non-interactive bash inside the shell, between two
    `stty -a` into files; returns (bash's pid, a function that waits for the
    end and returns (status, settings before, settings after))."""
    before = os.path.join(workdir, "stty.before")
    after = os.path.join(workdir, "stty.after")
    script = (f"trap : INT QUIT; echo INNER=$$; stty -a > {shlex.quote(before)}; {command}; "
              f"echo EXIT=$?; stty -a > {shlex.quote(after)}")
    shell.run("bash -c " + shlex.quote(script))
    shell.p.expect(r"INNER=(\d+)")
    inner = int(shell.p.match.group(1))

    def finish():
        shell.p.expect(r"EXIT=(\d+)")
        status = int(shell.p.match.group(1))
        shell.prompt()
        with open(before) as f_before, open(after) as f_after:
            return status, f_before.read(), f_after.read()
    return inner, finish


def child_of(pid):
    def children():
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    wait_for(lambda: children(), what=f"a child of {pid}")
    return children()[0]


@pytest.mark.parametrize("how,status", [
    ("enter", 0),
    ("ctrl-c", 128 + signal.SIGINT),
    ("ctrl-backslash", 128 + signal.SIGQUIT),
    ("ctrl-d", 125),
    ("wrong", 125),
    ("sigterm", 128 + signal.SIGTERM),
    ("sighup", 128 + signal.SIGHUP),
])
def test_preloadrun_leaves_the_terminal_as_it_was(shell, tools, workdir, how, status):
    card = unique("exit")
    create_softcard(tools, workdir, card)
    command = shlex.join([tools["preloadrun"], "-q", "--socket", tools["socket"], "-s", card,
                          "--", "true"])
    inner, finish = run_wrapped(shell, workdir, command)
    shell.p.expect_exact(f"Passphrase for softcard {card}: ")
    if how == "enter":
        shell.p.send(PASSPHRASE + "\r")
    elif how == "wrong":
        shell.p.send("not-" + PASSPHRASE + "\r")
    elif how == "ctrl-c":
        shell.p.send(PART + "\x03")
    elif how == "ctrl-backslash":
        shell.p.send(PART + "\x1c")
    elif how == "ctrl-d":
        shell.p.send("\x04")
    else:
        shell.p.send(PART)
        time.sleep(0.2)
        os.kill(child_of(inner), signal.SIGTERM if how == "sigterm" else signal.SIGHUP)
    got_status, before, after = finish()
    assert got_status == status
    assert after == before
    assert_never_shown(shell)
    shell.close()


def test_hsmsim_softcard_create_in_the_background_asks_twice_after_fg(shell, tools, workdir):
    card = unique("new")
    before = shell.stty()
    shell.run(shlex.join([tools["hsmsim"], "--socket", tools["socket"], "softcard", "create",
                          card]) + " &")
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("fg")
    shell.p.expect_exact(f"Passphrase for new softcard {card}: ")
    shell.p.send(PASSPHRASE + "\r")
    shell.p.expect_exact("Again: ")
    shell.p.send(PART)
    shell.p.send("\x1a")  # Ctrl-Z in the confirmation: asked again, the first kept
    shell.p.expect("Stopped")
    shell.sync()
    shell.run("fg")
    shell.p.expect_exact("Again: ")
    shell.p.send(PASSPHRASE + "\r")
    shell.p.expect_exact(f"created softcard {card}")
    shell.prompt()
    assert shell.status() == 0
    assert shell.stty() == before
    assert_never_shown(shell)
    assert unlocks(tools, workdir, card)
    shell.close()


@pytest.mark.parametrize("how,status", [
    ("enter", 0),
    ("differ", 2),
    ("ctrl-c", 128 + signal.SIGINT),
])
def test_hsmsim_softcard_create_leaves_the_terminal_as_it_was(shell, tools, workdir, how,
                                                              status):
    card = unique("cr")
    command = shlex.join([tools["hsmsim"], "--socket", tools["socket"], "softcard", "create",
                          card])
    _, finish = run_wrapped(shell, workdir, command)
    shell.p.expect_exact(f"Passphrase for new softcard {card}: ")
    shell.p.send(PASSPHRASE + "\r")
    shell.p.expect_exact("Again: ")
    if how == "enter":
        shell.p.send(PASSPHRASE + "\r")
    elif how == "differ":
        shell.p.send(PASSPHRASE + "-typo\r")
    else:
        shell.p.send(PART + "\x03")
    got_status, before, after = finish()
    assert got_status == status
    assert after == before
    assert_never_shown(shell)
    listed = subprocess.run([tools["hsmsim"], "--socket", tools["socket"], "softcard", "list"],
                            capture_output=True, text=True, check=True).stdout
    assert (re.search(rf"\b{card}\b", listed) is not None) == (how == "enter")
    shell.close()


def test_an_orphaned_background_group_gives_up_rather_than_hang(shell, tools, workdir):
    # preloadrun in a process group of its own whose parent has gone: no
    # shell will ever bring it to the foreground, and the kernel does not
    # stop an orphaned group. It must neither hang nor touch the terminal.
    card = unique("orphan")
    create_softcard(tools, workdir, card)
    before = shell.stty()
    err = os.path.join(workdir, "err")
    pid_file = os.path.join(workdir, "pid")
    # The group is orphaned before preloadrun starts (were it stopped
    # first, the kernel would end it with SIGHUP when the group became
    # orphaned, as it should).
    starter = "\n".join([
        "import os, sys, time",
        "parent = os.getpid()",
        "if os.fork() == 0:",
        "    os.setpgrp()",
        "    while os.getppid() == parent:",
        "        time.sleep(0.01)",
        "    os.dup2(os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o600), 2)",
        "    open(sys.argv[2], 'w').write(str(os.getpid()))",
        "    os.execv(sys.argv[3], sys.argv[3:])",
    ])
    shell.run(shlex.join(["/usr/bin/python3", "-c", starter, err, pid_file, tools["preloadrun"],
                          "-q", "--socket", tools["socket"], "-s", card]))
    shell.prompt()
    wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read(), what="the pid")
    pid = int(open(pid_file).read())
    wait_for(lambda: (proc_stat(pid) or ["Z"])[0] == "Z",
             what="preloadrun to give up")
    with open(err) as f:
        message = f.read()
    assert "cannot ask for the passphrase" in message and "--passphrase-file" in message
    assert shell.stty() == before
    shell.close()
