"""Where the documentation's examples run: a served hsmsim world, and a
sandbox that gives an example what its text takes for granted.

A World is one `hsmsim serve` with the softcards, card sets and keys an
example names (created through the CLI, passphrases from files).

A Sandbox is one private directory under /tmp and one mount namespace:
- HOME is its own directory; the working directory looks like the top of a
  clone after a build (README.md, scripts/ and build/default/ point at this
  source tree and the build under test);
- PATH starts with preloadrun and hsmsim under test, and `myapp` and `tool`
  (the stand-in application, tests/docs/myapp);
- system directories an example writes to or reads from (/run/app,
  /run/secrets, /etc/pkcs11, /var/log, ...) are overlays in that namespace:
  the host's files show through, what the example writes goes to the
  sandbox's directory `upper/<path>`, where the test reads it, and the host
  is untouched. Files an example needs there are put in `upper` first.

Every example runs as written, with `bash -e -o pipefail -c TEXT` (a line
that fails fails the example), on a terminal of its own (pexpect): prompts
for a passphrase are answered as a person would, by the token's name.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import pexpect

from examples import SOURCE

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
from hsmsim_service import Sim  # noqa: E402
from procs import processes  # noqa: E402
TIMEOUT = 30.0
# A passphrase prompt: hsmsim's and preloadrun's ("Passphrase for softcard
# 'mycard': ", "Again: "), systemd-ask-password's ("mycard passphrase: (press
# TAB for no echo)"). Only at the end of what was printed: a prompt waits.
PROMPT = re.compile(r"(?i)(passphrase[^\r\n]*?|again):( \(press TAB for no echo\))?\s*$")


# -- worlds --------------------------------------------------------------------

@dataclass(frozen=True)
class WorldSpec:
    """What a world holds. `shared` worlds are served once per test module
    for every scenario that asks for the same spec (examples that only use
    them); the others are made for one scenario (examples that change it)."""
    modules: int = 3
    softcards: tuple = ()   # (name, passphrase)
    cardsets: tuple = ()    # (name, passphrase)
    keys: tuple = ()        # (label, id, protect) as `hsmsim key generate` takes them
    shared: bool = True

    def passphrases(self):
        return dict(self.softcards + self.cardsets)


class World:
    """A Sim (tests/support/hsmsim_service.py) served with what `spec`
    holds; `env` is what points an example at it (NFAST_KMDATA,
    HSMSIM_SOCKET, HSMSIM_ADMIN_SOCKET)."""

    def __init__(self, hsmsim, spec):
        self.spec = spec
        self.root = tempfile.mkdtemp(prefix="docw", dir="/tmp")  # short: sun_path
        self.sim = Sim(hsmsim, self.root,
                       env_base={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": self.root})
        self.env = self.sim.service_vars
        self.sim.start(modules=spec.modules, init_delay_ms=0)
        passfiles = {}
        for kind, tokens in (("softcard", spec.softcards), ("cardset", spec.cardsets)):
            for name, passphrase in tokens:
                passfiles[name] = self.sim.create_token(name, passphrase + "\n", kind)
        for label, ident, protect in spec.keys:
            args = ["key", "generate", "--type", "ec-p256", "--label", label, "--id", ident,
                    "--protect", protect]
            if protect != "module":
                args += ["--passphrase-file", passfiles[protect.split(":", 1)[1]]]
            self.sim.ok(*args)

    def log(self):
        return self.sim.log()

    def close(self):
        self.sim.stop(check=False)
        shutil.rmtree(self.root, ignore_errors=True)


# -- files an example needs ------------------------------------------------------

@dataclass(frozen=True)
class Link:
    """A symbolic link to `target` ({module}, {build}, {source} expanded)."""
    target: str


@dataclass(frozen=True)
class Dir:
    mode: int = 0o700


# -- the sandbox -------------------------------------------------------------------

@dataclass
class Result:
    text: str
    status: int
    output: str


def _session_members(sid):
    return [pid for pid, fields in processes() if int(fields[3]) == sid]  # field 6: the session


class Transcript:
    """pexpect's logfile_read: keeps everything an example printed."""

    def __init__(self):
        self.parts = []

    def write(self, data):
        self.parts.append(data)

    def flush(self):
        pass

    def text(self):
        return "".join(self.parts).replace("\r\n", "\n")


class Shell:
    """One example running on a terminal of its own."""

    def __init__(self, sandbox, text, argv, env):
        self.sandbox, self.text = sandbox, text
        self.transcript = Transcript()
        self.child = pexpect.spawn(argv[0], argv[1:], env=env, cwd=sandbox.work,
                                   encoding="utf-8", codec_errors="replace",
                                   dimensions=(50, 250), timeout=TIMEOUT)
        self.child.logfile_read = self.transcript
        self.last_answer = None
        self.status = None

    def output(self):
        return self.transcript.text()

    def _answer(self, prompt):
        if prompt.lower().startswith("again"):
            answer = self.last_answer
        else:
            known = self.sandbox.passphrases
            names = ([n for n in re.findall(r"'([^']*)'", prompt) if n in known]
                     or [n for n in known if re.search(rf"\b{re.escape(n)}\b", prompt)])
            assert names or len(known) == 1, (
                f"a prompt for which the scenario has no passphrase: {prompt!r}")
            answer = known[max(names, key=len) if names else next(iter(known))]
        self.last_answer = answer
        time.sleep(0.1)  # the prompt turns echo off before it reads
        self.child.sendline(answer)

    def pump(self, until=None, timeout=TIMEOUT):
        """Answers prompts until `until()` holds (True) or the example ends
        (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until():
                return True
            i = self.child.expect([PROMPT, pexpect.EOF, pexpect.TIMEOUT], timeout=0.05)
            if i == 0:
                line = self.child.before.rsplit("\n", 1)[-1] + self.child.after
                self._answer(line.strip())
            elif i == 1:
                return False
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s: {self.text}\n"
                                     f"--- output so far:\n{self.output()}")

    def wait(self, timeout=TIMEOUT):
        """Waits for the example's end; its exit status (128+N for signal N)."""
        if self.status is None:
            self.pump(timeout=timeout)
            self.child.close()
            self.status = (self.child.exitstatus if self.child.exitstatus is not None
                           else 128 + self.child.signalstatus)
            self.stop_leftovers()
        return self.status

    def interrupt(self):
        """Ctrl-C, as a person would."""
        self.child.sendintr()

    def stop_leftovers(self):
        """What the example left running in the background (`cmd &`) on its
        terminal: SIGTERM, then SIGKILL."""
        sid = self.child.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _session_members(sid)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while pids and _session_members(sid) and time.monotonic() < deadline:
                time.sleep(0.05)


class Sandbox:
    def __init__(self, programs, module, world=None, files=None, private=(), env=None,
                 passphrases=None):
        self.programs, self.module, self.world = programs, module, world
        self.root = tempfile.mkdtemp(prefix="docs", dir="/tmp")
        os.chmod(self.root, 0o755)  # the namespace's /run etc. look into it
        self.home = self._mkdir("home", 0o700)
        self.work = self._mkdir("work", 0o755)
        self.bin = self._mkdir("bin", 0o755)
        self.upper = self._mkdir("upper", 0o755)
        self.report = os.path.join(self.root, "myapp.jsonl")
        self.passphrases = dict(world.spec.passphrases() if world else {})
        self.passphrases.update(passphrases or {})
        self.shells = []
        self.holder = None

        for name, path in (("preloadrun", programs["preloadrun"]),
                           ("hsmsim", programs["hsmsim"]), ("hsmfleet", programs["hsmfleet"]),
                           ("myapp", os.path.join(HERE, "myapp")),
                           ("tool", os.path.join(HERE, "myapp"))):
            os.symlink(path, os.path.join(self.bin, name))
        # The top of a clone after `scripts/dev.sh build`.
        os.symlink(os.path.join(SOURCE, "README.md"), os.path.join(self.work, "README.md"))
        os.symlink(os.path.join(SOURCE, "scripts"), os.path.join(self.work, "scripts"))
        os.mkdir(os.path.join(self.work, "build"))
        os.symlink(programs["build"], os.path.join(self.work, "build", "default"))

        self.env = {
            "PATH": f"{self.bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": self.home, "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
            "LC_ALL": "C", "TERM": "dumb", "NO_COLOR": "1",
            "DOCS_PKCS11_MODULE": module, "DOCS_MYAPP_REPORT": self.report,
            **(world.env if world else {}),
        }
        self.env.update({k: self.expand(v) for k, v in (env or {}).items()})

        tops = set()
        for path in [*private, *(p for p in (files or {}) if p.startswith("/"))]:
            top = os.path.dirname(path) if path in (files or {}) else path
            while not os.path.isdir(top):
                top = os.path.dirname(top)
            assert top != "/", f"{path}: will not lay an overlay over /"
            tops.add(top)
        self.tops = [t for t in sorted(tops)
                     if not any(t.startswith(o + "/") for o in tops)]
        for top in self.tops:
            upper = self.upper + top
            os.makedirs(upper)
            st = os.stat(top)
            os.chmod(upper, st.st_mode & 0o7777)
            os.chown(upper, st.st_uid, st.st_gid)
        for path, content in (files or {}).items():
            self.put(path, content)
        self._start_namespace()

    def _mkdir(self, name, mode):
        path = os.path.join(self.root, name)
        os.mkdir(path, mode)
        return path

    def expand(self, text):
        return text.format(home=self.home, work=self.work, module=self.module,
                           build=self.programs["build"], source=SOURCE, root=self.root)

    def host_path(self, path):
        """Where the file an example sees at `path` is on the host."""
        if path.startswith("~/"):
            return os.path.join(self.home, path[2:])
        if path.startswith("/"):
            assert any(path == t or path.startswith(t + "/") for t in self.tops), (
                f"{path} is not private to the sandbox")
            return self.upper + path
        return os.path.join(self.work, path)

    def put(self, path, content):
        host = self.host_path(path)
        os.makedirs(os.path.dirname(host), mode=0o700, exist_ok=True)
        if isinstance(content, Link):
            os.symlink(self.expand(content.target), host)
        elif isinstance(content, Dir):
            os.mkdir(host, content.mode)
        else:
            data = content.encode() if isinstance(content, str) else content
            with open(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
                f.write(data)

    def read(self, path):
        with open(self.host_path(path), errors="replace") as f:
            return f.read()

    def _start_namespace(self):
        """A process that holds the mount namespace with the overlays; every
        example of the scenario enters it."""
        args = []
        for n, top in enumerate(self.tops):
            work = self._mkdir(f"ovl{n}", 0o700)
            args += [top, self.upper + top, work]
        script = ('set -e; while [ $# -gt 0 ]; do '
                  'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$1"; '
                  'shift 3; done; echo ready; exec sleep infinity')
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "/bin/bash", "-c", script,
             "holder", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        line = self.holder.stdout.readline()
        assert line == "ready\n", f"the mount namespace did not start: {line!r}"

    def argv(self, *command):
        return ["nsenter", f"--target={self.holder.pid}", "--mount", f"--wd={self.work}", "--",
                *command]

    def spawn(self, text, env=None, argv=None):
        env = {**self.env, **{k: self.expand(v) for k, v in (env or {}).items()}}
        shell = Shell(self, text, argv or self.argv("/bin/bash", "-e", "-o", "pipefail", "-c",
                                                     text), env)
        self.shells.append(shell)
        return shell

    def myapp_runs(self):
        try:
            with open(self.report) as f:
                return [json.loads(line) for line in f]
        except FileNotFoundError:
            return []

    def close(self):
        for shell in self.shells:
            if shell.status is None:
                shell.child.close(force=True)
                shell.stop_leftovers()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder.stdout.close()
        shutil.rmtree(self.root, ignore_errors=True)
