"""`hsmsim serve --fleet FILE` over a MemberFarm (p11kit_members.py), for the
Python tests: the fleet configuration written from the farm's members, the
service started on it, and the admin CLI pointed at it.

MemberService.write_config() (re)writes the configuration: the members
given, one token set `set_name` holding them all, the library of the farm
(p11-kit's client module) and each member's server address in its `env`.
The service re-reads the file when it changes. MEMBER_SERVICE_ARGS in the
environment adds global options before `serve` (`--log-level debug`, to see
why a test failed).
"""

import json
import os
import re
import signal
import subprocess

from p11kit_members import CLIENT_MODULE
from procs import env_with, read_first_line, wait_for

READY_RE = re.compile(
    r"^hsmfleet: ready: (?P<modules>\d+) modules, PKCS#11 members of (?P<config>\S+), "
    r"socket (?P<socket>\S+), admin socket (?P<admin>\S+)$")


class MemberService:
    """One fleet configuration in `root` and (at most) one service on it."""

    def __init__(self, binary, root, farm, set_name="signing", timeout="1500ms",
                 probe_interval="300ms"):
        self.bin = binary
        self.root = root
        self.farm = farm
        self.set_name = set_name
        self.timeout = timeout
        self.probe_interval = probe_interval
        self.config = os.path.join(root, "fleet.toml")
        self.socket = os.path.join(root, "c.sock")
        self.admin_socket = os.path.join(root, "a.sock")
        self.log_path = os.path.join(root, "serve.log")
        self.proc = None
        # Members of other libraries (fake_library_member()): written after
        # the farm's, in the default set too.
        self.extra_members = []

    @property
    def env(self):
        """The environment of the CLI, preloadrun and the application."""
        return env_with(os.environ, HSMSIM_SOCKET=self.socket,
                        HSMSIM_ADMIN_SOCKET=self.admin_socket, NFAST_KMDATA=None,
                        NOTIFY_SOCKET=None, LC_ALL="C")

    def config_text(self, members, sets=None):
        lines = ["# written by the test from its member farm", "[defaults]",
                 f'library = "{CLIENT_MODULE}"', f'timeout = "{self.timeout}"',
                 f'probe-interval = "{self.probe_interval}"', "max-sessions = 4", ""]
        for m in members:
            lines += [f"[member.{m.name}]", f'token = {{ label = "{m.label}" }}',
                      f'env = {{ P11_KIT_SERVER_ADDRESS = "{m.address}" }}', ""]
        for m in self.extra_members:
            env = ", ".join(f'{k} = "{v}"' for k, v in m["env"].items())
            lines += [f"[member.{m['name']}]", f'library = "{m["library"]}"',
                      f'token = {{ label = "{m["label"]}" }}', f"env = {{ {env} }}", ""]
        sets = sets or {self.set_name: [m.name for m in members] +
                        [m["name"] for m in self.extra_members]}
        for name, names in sets.items():
            listed = ", ".join(f'"{n}"' for n in names)
            lines += [f"[set.{name}]", f"members = [{listed}]", ""]
        return "\n".join(lines)

    def write_config(self, members=None, sets=None):
        """Writes the configuration atomically (as an editor that renames
        does); `sets`: {set: [member names]}, by default one set of them all."""
        members = self.farm.members if members is None else members
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(self.config_text(members, sets))
        os.chmod(tmp, 0o600)
        os.rename(tmp, self.config)

    def start(self, extra=()):
        if not os.path.exists(self.config):
            self.write_config()
        self.proc = subprocess.Popen(
            [self.bin, *os.environ.get("MEMBER_SERVICE_ARGS", "").split(), "serve", "--fleet",
             self.config, "--init-delay-ms", "100", *extra],
            env=self.env, stdout=subprocess.PIPE, stderr=open(self.log_path, "ab"))
        line = read_first_line(self.proc, timeout=30)
        assert line is not None, f"no ready line; log:\n{self.log()}"
        assert READY_RE.match(line), line
        return line

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        status = None if self.proc is None else self.proc.returncode
        self.proc = None
        return status

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def cli(self, *args, check=True):
        return subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True,
                              check=check, timeout=30)

    def modules(self):
        """{esn: module} of `hsmsim module list --json`."""
        out = self.cli("module", "list", "--json").stdout
        return {m["esn"]: m for m in json.loads(out)}

    def wait_module(self, esn, predicate, what, timeout=20.0):
        """Waits until `predicate(module)` holds for member `esn`; the module."""
        found = {}

        def check():
            m = self.modules().get(esn)
            if m is not None and predicate(m):
                found["m"] = m
                return True
            return False
        try:
            wait_for(check, timeout=timeout, what=f"member {esn}: {what}", interval=0.05)
        except AssertionError as e:
            raise AssertionError(f"{e}; the modules: {self.modules()}") from None
        return found["m"]
