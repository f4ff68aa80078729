"""The vocabulary of the registry in test_examples.py: how an example runs
(Run, Entrypoint, Start and End, grouped in a Scenario) and what must hold
afterwards (exit status, output, App: what the stand-in application did);
Checked for an example that cannot run here as written."""

import json
import re
from dataclasses import dataclass, field

from sandbox import TIMEOUT, WorldSpec


@dataclass
class App:
    """One run of the stand-in application (tests/docs/myapp) that must have
    happened: its name and arguments, the tokens it logged in to with any
    PIN (so preloadrun had loaded them), the key it signed with."""
    argv: tuple = ()
    tokens: tuple = ()
    key: str = None
    name: str = "myapp"
    parent: str = None  # the program it is a child of
    ppid: int = None    # 1: a child of PID 1

    def mismatch(self, run):
        want = {"name": self.name, "argv": list(self.argv), "tokens": sorted(self.tokens)}
        got = {"name": run["name"], "argv": run["argv"], "tokens": sorted(run["tokens"])}
        for attr in ("key", "parent", "ppid"):
            if getattr(self, attr) is not None:
                want[attr], got[attr] = getattr(self, attr), run[attr]
        return None if want == got else f"expected {want}, got {got}"


@dataclass
class Run:
    """Runs the example to its end."""
    text: str
    status: int = 0
    output: tuple = ()      # regular expressions the output must match
    apps: tuple = None      # the runs of myapp it must have made (None: not checked)
    env: dict = field(default_factory=dict)
    under: tuple = ()       # a command it runs under (an application's environment)
    check: object = None    # check(sandbox, output): anything else
    timeout: float = TIMEOUT

    def argv(self, sb):
        return sb.argv(*[sb.expand(a) for a in self.under], "/bin/bash", "-e", "-o", "pipefail",
                       "-c", self.text)

    def step(self, sb, started):
        before = len(sb.myapp_runs())
        shell = sb.spawn(self.text, self.env, self.argv(sb))
        status = shell.wait(self.timeout)
        judge(self, sb, shell, status, sb.myapp_runs()[before:])


@dataclass
class Entrypoint(Run):
    """A Dockerfile's ENTRYPOINT (and CMD) lines: their JSON arrays run as
    PID 1 of a new PID namespace, as a container runtime runs them. `cmd` is
    used when the example has no CMD line."""
    cmd: tuple = ("myapp",)

    def argv(self, sb):
        lines = dict(line.split(" ", 1) for line in self.text.splitlines())
        argv = json.loads(lines["ENTRYPOINT"]) + (json.loads(lines["CMD"]) if "CMD" in lines
                                                  else list(self.cmd))
        return sb.argv("unshare", "--pid", "--fork", "--mount-proc", "--", *argv)


@dataclass
class Start:
    """Starts the example in a terminal of its own and waits until it is
    ready: `ready` is a regular expression its output must match, or
    check(sandbox) -> bool. `interactive`: typed into an interactive bash
    (a command line that ends with &, which bash -c would not wait for)."""
    text: str
    ready: object
    env: dict = field(default_factory=dict)
    interactive: bool = False

    def step(self, sb, started):
        if self.interactive:
            shell = sb.spawn(self.text, self.env,
                             sb.argv("/bin/bash", "--norc", "--noprofile", "-i"))
            shell.child.sendline(self.text)
            shell.interactive = True
        else:
            shell = sb.spawn(self.text, self.env)
        if isinstance(self.ready, str):
            until = lambda: re.search(self.ready, shell.output(), re.M)  # noqa: E731
        else:
            until = lambda: self.ready(sb)  # noqa: E731
        assert shell.pump(until), (f"ended before it was ready: {self.text}\n"
                                   f"--- output:\n{shell.output()}")
        started[self.text] = shell


@dataclass
class End:
    """Ends an example that Start started: Ctrl-C (`interrupt`), or waits for
    its own end (an interactive shell is told to `exit`; what it started in
    the background is then stopped); then checks it as Run does."""
    text: str
    interrupt: bool = True
    status: int = 0
    output: tuple = ()
    apps: tuple = None
    check: object = None
    timeout: float = TIMEOUT

    def step(self, sb, started):
        shell = started.pop(self.text)
        before = len(sb.myapp_runs())
        if self.interrupt:
            shell.interrupt()
        elif getattr(shell, "interactive", False):
            shell.child.sendline("exit")
        status = shell.wait(self.timeout)
        judge(self, sb, shell, status, sb.myapp_runs()[before:])


def judge(step, sb, shell, status, runs):
    report = f"{step.text}\n--- its output:\n{shell.output()}"
    assert status == step.status, f"exit status {status}, not {step.status}: {report}"
    for pattern in step.output:
        assert re.search(pattern, shell.output(), re.M), f"no match for {pattern!r}: {report}"
    if step.apps is not None:
        assert len(runs) == len(step.apps), f"myapp ran {len(runs)} times: {runs}\n{report}"
        for app, run in zip(step.apps, runs):
            assert app.mismatch(run) is None, f"{app.mismatch(run)}\n{report}"
    if step.check is not None:
        step.check(sb, shell.output())


@dataclass
class Scenario:
    """Examples that go together (a server and its clients, a page whose
    examples share a setting), run in order in one sandbox."""
    name: str
    steps: list
    world: WorldSpec = None           # served before the first step
    files: dict = field(default_factory=dict)    # path: content, Link or Dir
    private: tuple = ()               # system directories the examples write to
    env: dict = field(default_factory=dict)      # every step's environment
    passphrases: dict = field(default_factory=dict)  # typed at prompts, by token name

    def texts(self):
        return {s.text for s in self.steps}


@dataclass
class Checked:
    """An example that cannot run here as written: `by` says which test
    covers it, `why` why it does not run here; check() checks here what it
    can (names, paths, versions against the sources)."""
    name: str
    text: str
    by: str
    why: str
    check: object       # check(text, programs)

    def texts(self):
        return {self.text}
