"""An interactive bash with job control on a pseudo-terminal (pexpect), for
the pty tests: commands are typed as a person would, ended with Enter
("\\r"), and what the terminal shows is kept in WORKDIR/pty.log.

`shell_fixture(...)` makes a test module's `shell` fixture: a Shell in the
test's workdir, ended at the end of the test.
"""

import os

import pexpect
import pytest

from procs import env_with


class Shell:
    """bash --norc --noprofile -i on a fresh pty of `columns` columns, its
    prompt `prompt`, job state changes reported at once (set -b). With
    `editing`, readline's line editing (the terminal in raw mode while bash
    reads a line); with `echo` False the terminal does not echo what is
    typed, so that only output is matched. `env`: variables to set in the
    shell's environment (None: unset)."""

    def __init__(self, workdir, prompt, timeout, editing=True, echo=True, columns=200, env=None):
        self.prompt_text = prompt
        env = env_with(os.environ, **{"PROMPT_COMMAND": None, **(env or {}), "PS1": prompt,
                                      "TERM": "dumb", "INPUTRC": "/dev/null",
                                      "HISTFILE": "/dev/null"})
        args = ["--norc", "--noprofile", *([] if editing else ["--noediting"]), "-i"]
        self.log_path = os.path.join(workdir, "pty.log")
        self.syncs = 0
        self.p = pexpect.spawn("bash", args, cwd=workdir, env=env, encoding="utf-8",
                               timeout=timeout, dimensions=(24, columns))
        self.p.logfile_read = open(self.log_path, "w")
        self.prompt()
        self.run("set -b" if echo else "stty -echo; set -b")
        self.prompt()

    def prompt(self):
        self.p.expect_exact(self.prompt_text)

    def run(self, line):
        # "\r", as Enter on a real terminal sends it.
        self.p.send(line + "\r")

    def sync(self):
        """Waits for the shell to read commands again (after a job stopped,
        the notice may come before or after the prompt)."""
        self.syncs += 1
        self.run(f"echo SYNC-$((0+{self.syncs}))")
        self.p.expect_exact(f"SYNC-{self.syncs}\r\n")
        self.prompt()

    def status(self):
        """$? of the last command. (The markers are computed so that the
        shell's echo of the command line never matches.)"""
        self.run("echo STATUS=$((0+1))$?")
        self.p.expect(r"STATUS=1(\d+)")
        status = int(self.p.match.group(1))
        self.prompt()
        return status

    def stty(self):
        """`stty -a` as the shell runs its commands."""
        self.run("echo BEGIN-$((0+1)); stty -a; echo END-$((1+1))")
        self.p.expect(r"BEGIN-1\r\n(.*)END-2")
        settings = self.p.match.group(1)
        self.prompt()
        return settings

    def output(self):
        """Everything the terminal showed so far."""
        self.p.logfile_read.flush()
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        self.run("exit")
        self.p.expect(pexpect.EOF)
        self.p.close()


def shell_fixture(**options):
    """A `shell` fixture: Shell(workdir, **options), ended after the test."""

    @pytest.fixture
    def shell(workdir):
        sh = Shell(workdir, **options)
        yield sh
        if sh.p.isalive():
            sh.p.terminate(force=True)

    return shell
