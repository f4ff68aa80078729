"""Running as a service: the systemd units in dist/systemd, and preloadrun as
a container's entrypoint (PID 1 of a PID namespace).

The units are checked twice: `systemd-analyze verify` reads them as systemd
would (in a scratch root holding the units, the programs and the system's
targets), and their ExecStart= lines are run the way systemd runs a
Type=notify service (environment from Environment=, %i and %d expanded,
RuntimeDirectory= created, NOTIFY_SOCKET set, SIGTERM to stop), with the
fixed paths under /run and /var/lib moved into a scratch directory.
"""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from preloadrun_support import PASS1, TIMEOUT, executable, wait_for

DIST = os.environ.get("PRELOADRUN_DIST", "")
UNITS = ("hsmsim.service", "preloadrun@.service")


@pytest.fixture(scope="module")
def dist():
    if not DIST or not os.path.isdir(os.path.join(DIST, "systemd")):
        pytest.fail("PRELOADRUN_DIST must name the dist/ directory (run through ctest)")
    return DIST


@pytest.fixture
def scratch():
    root = tempfile.mkdtemp(prefix="dep", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def read_unit(path):
    """The [Unit] and [Service] sections; repeated keys (Environment=) kept in order."""
    sections, current = {}, None
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), [])
                continue
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def values(section, key):
    return [v for k, v in section if k == key]


# -- systemd-analyze verify -----------------------------------------------------

def verify_root(root, dist, programs):
    units = os.path.join(root, "usr/lib/systemd/system")
    os.makedirs(units)
    # The system's own unit files (targets, slices...), copied: with --root,
    # symbolic links to /usr/lib/... would point outside the scratch root.
    for name in os.listdir("/usr/lib/systemd/system"):
        src = os.path.join("/usr/lib/systemd/system", name)
        if os.path.isfile(src) and not os.path.islink(src):
            shutil.copy(src, units)
    for unit in UNITS:
        shutil.copy(os.path.join(dist, "systemd", unit), units)
    bindir = os.path.join(root, "usr/bin")
    os.makedirs(bindir)
    for program in programs:
        shutil.copy(program, bindir)
    return units


def install_man_pages(root):
    """The built man pages, where `man` finds them (Documentation=man:...)."""
    mandir = os.environ.get("PRELOADRUN_MANDIR", "")
    if not os.path.isdir(mandir):
        pytest.fail("PRELOADRUN_MANDIR must name the built man pages (run through ctest)")
    for page in os.listdir(mandir):
        section = page.rsplit(".", 1)[-1]
        if section.isdigit():
            os.makedirs(os.path.join(root, f"usr/share/man/man{section}"), exist_ok=True)
            shutil.copy(os.path.join(mandir, page), os.path.join(root, f"usr/share/man/man{section}"))
    return os.path.join(root, "usr/share/man")


def analyze(root, *units):
    env = {**os.environ, "MANPATH": os.path.join(root, "usr/share/man")}
    r = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units],
                       capture_output=True, text=True, timeout=60, env=env)
    ours = [line for line in r.stderr.splitlines()
            if "hsmsim" in line or "preloadrun" in line]
    return r.returncode, ours


def test_units_pass_systemd_analyze_verify(dist, scratch):
    programs = [executable("HSMSIM"), executable("PRELOADRUN")]
    units = verify_root(scratch, dist, programs)
    install_man_pages(scratch)
    rc, complaints = analyze(scratch, "hsmsim.service", "preloadrun@mycard.service")
    assert rc == 0 and complaints == [], complaints
    # The check itself notices a broken unit (so a pass above means something).
    with open(os.path.join(units, "hsmsim.service"), "a") as f:
        f.write("[Service]\nType=notifyy\n")
    os.remove(os.path.join(scratch, "usr/bin/preloadrun"))
    rc, complaints = analyze(scratch, "hsmsim.service", "preloadrun@mycard.service")
    assert any("notifyy" in line for line in complaints), complaints
    assert rc != 0 and any("preloadrun" in line and "executable" in line
                           for line in complaints), complaints


# -- the units' commands, run as systemd runs them ------------------------------

class Notify:
    """A NOTIFY_SOCKET that collects the datagrams of one service."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def wait_ready(self, proc, log):
        self.sock.settimeout(0.1)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            if "READY=1" in data.split("\n"):
                return
        raise AssertionError(f"no READY=1 (exit status {proc.poll()}); log:\n{log()}")

    def close(self):
        self.sock.close()


class UnitRunner:
    """Runs a unit's ExecStart= with /run and /var/lib moved under `root`."""

    def __init__(self, dist, root, programs):
        self.dist, self.root, self.programs = dist, root, programs
        self.procs = []

    def moved(self, text):
        for top in ("/run/", "/var/lib/"):
            text = text.replace(top, os.path.join(self.root, top.strip("/")) + "/")
        return text

    def start(self, unit, instance=None, credentials=None, env_extra=None):
        service = read_unit(os.path.join(self.dist, "systemd", unit))["Service"]

        def expand(text):
            text = text.replace("%i", instance or "")
            text = text.replace("%d", credentials or "")
            return self.moved(text)

        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "NO_COLOR": "1"}
        for assignment in values(service, "Environment"):
            for item in shlex.split(assignment):
                key, _, value = item.partition("=")
                env[key] = expand(value)
        # RuntimeDirectory= and StateDirectory=, with their modes (systemd's
        # default 0755), created before the service starts.
        for kind, top in (("Runtime", "run"), ("State", "var/lib")):
            mode = int((values(service, f"{kind}DirectoryMode") or ["0755"])[0], 8)
            for name in values(service, f"{kind}Directory"):
                path = os.path.join(self.root, top, expand(name))
                os.makedirs(path, exist_ok=True)
                os.chmod(path, mode)
        argv = shlex.split(expand(values(service, "ExecStart")[0]))
        assert "/" not in argv[0], "units name the program, systemd finds it"
        argv[0] = self.programs[argv[0]]
        notify = Notify(os.path.join(self.root, f"notify{len(self.procs)}"))
        env["NOTIFY_SOCKET"] = notify.path
        env.update(env_extra or {})
        log = open(os.path.join(self.root, f"{unit}.log"), "wb")
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
        log.close()
        self.procs.append(proc)
        try:
            notify.wait_ready(proc, lambda: self.log(unit))
        finally:
            notify.close()
        return proc, env

    def log(self, unit):
        with open(os.path.join(self.root, f"{unit}.log"), errors="replace") as f:
            return f.read()

    def stop(self, proc):
        """systemctl stop: SIGTERM, then wait (TimeoutStopSec)."""
        proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=TIMEOUT)

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_units_start_notify_ready_and_stop_cleanly(dist, scratch):
    hsmsim, preloadrun = executable("HSMSIM"), executable("PRELOADRUN")
    units = UnitRunner(dist, scratch, {"hsmsim": hsmsim, "preloadrun": preloadrun})
    try:
        sim, sim_env = units.start("hsmsim.service")
        admin = {**sim_env, "PATH": os.environ["PATH"]}
        admin.pop("NOTIFY_SOCKET")
        passfile = os.path.join(scratch, "pass")
        with open(passfile, "w") as f:
            f.write(PASS1 + "\n")
        subprocess.run([hsmsim, "softcard", "create", "mycard", "--passphrase-file", passfile],
                       env=admin, check=True, capture_output=True, timeout=TIMEOUT)
        # LoadCredentialEncrypted= gives the service the decrypted passphrase
        # in a private directory, %d.
        credentials = os.path.join(scratch, "credentials")
        os.mkdir(credentials, 0o700)
        os.rename(passfile, os.path.join(credentials, "passphrase"))

        pre, pre_env = units.start("preloadrun@.service", instance="mycard",
                                   credentials=credentials)
        tokens = units.moved("/run/preloadrun/mycard/tokens.json")
        assert os.path.exists(tokens), units.log("preloadrun@.service")
        # An application points at the fixed path; the file is live.
        app_env = {**admin, "NFAST_NFKM_TOKENSFILE": tokens}
        r = subprocess.run([preloadrun, "check"], env=app_env, capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run([preloadrun, "--attach", tokens, "--", "sh", "-c",
                            'echo "$NFAST_NFKM_TOKENSFILE $CKNFAST_RELOAD_KEYS"'],
                           env=admin, capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0 and r.stdout == f"{tokens} 1\n", r.stderr
        loaded = subprocess.run([hsmsim, "module", "list", "--json"], env=admin, text=True,
                                capture_output=True, check=True).stdout
        assert '"objects": 0' not in loaded, loaded

        # systemctl stop preloadrun@mycard: exit 0, file gone, tokens unloaded.
        assert units.stop(pre) == 0, units.log("preloadrun@.service")
        assert not os.path.exists(tokens) and not os.path.exists(tokens + ".lock")
        r = subprocess.run([preloadrun, "check"], env=app_env, capture_output=True, text=True)
        assert r.returncode == 1
        loaded = subprocess.run([hsmsim, "module", "list", "--json"], env=admin, text=True,
                                capture_output=True, check=True).stdout
        assert loaded.count('"objects": 0') == 3, loaded
        # systemctl stop hsmsim: exit 0, sockets removed.
        assert units.stop(sim) == 0, units.log("hsmsim.service")
        assert not os.path.exists(units.moved("/run/hsmsim/client.sock"))
    finally:
        units.cleanup()


# -- PID 1 of a container -------------------------------------------------------

def proc_field(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return line.split(":", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def host_pid_of(ns_pid, ppid):
    """The host PID of the process that is `ns_pid` in its PID namespace and
    a child of host process `ppid`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            nspid = proc_field(entry, "NSpid")
            parent = proc_field(entry, "PPid")
            if nspid and parent and nspid[-1] == str(ns_pid) and parent[0] == str(ppid):
                return int(entry)
    return None


def test_pid1_in_a_pid_namespace_reaps_orphans_and_forwards_sigterm(pr_card):
    pr = pr_card
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed")
    marks = pr.path("marks")
    os.mkdir(marks)
    # The entrypoint's application: reports who PID 1 is, leaves an orphan
    # that outlives its parent by a little, and counts SIGTERMs.
    app = f"""
        trap 'echo TERM >> {marks}/signals; exit 143' TERM
        cat /proc/1/comm > {marks}/pid1
        sh -c 'sleep 1 & echo $! > {marks}/orphan'
        echo started > {marks}/started
        while :; do sleep 0.05; done
    """
    argv = ["unshare", "--pid", "--fork", "--mount-proc",
            pr.bin, "-s", "c1", "--passphrase-file", pr.card_pass, "-f", pr.tokens_file(),
            "--", "sh", "-c", app]
    unshare = subprocess.Popen(argv, env=pr.env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        wait_for(lambda: os.path.exists(f"{marks}/started"), what="the application")
        with open(f"{marks}/pid1") as f:
            assert f.read().strip() == "preloadrun"
        init = wait_for(lambda: [int(p) for p in
                                 open(f"/proc/{unshare.pid}/task/{unshare.pid}/children")
                                 .read().split()], what="PID 1")[0]
        assert proc_field(init, "NSpid")[-1] == "1"

        # The orphan was adopted by PID 1 (preloadrun), and once it exits it
        # is reaped: no zombie stays behind.
        with open(f"{marks}/orphan") as f:
            orphan_ns = int(f.read())
        orphan = host_pid_of(orphan_ns, init)
        assert orphan is not None, "the orphan was not adopted by PID 1"
        wait_for(lambda: proc_field(orphan, "State") is None, timeout=5,
                 what="the orphan to exit and be reaped by preloadrun")

        # docker stop: SIGTERM to PID 1 from outside the namespace.
        assert os.path.exists(pr.tokens_file())
        os.kill(init, signal.SIGTERM)
        out, err = unshare.communicate(timeout=TIMEOUT)
    finally:
        if unshare.poll() is None:
            os.killpg(unshare.pid, signal.SIGKILL)
            unshare.wait()
    assert unshare.returncode == 143, err.decode(errors="replace")
    with open(f"{marks}/signals") as f:
        assert f.read() == "TERM\n", "the application must get SIGTERM exactly once"
    assert not os.path.exists(pr.tokens_file())
    assert all(n == 0 for n in pr.module_objects().values()), pr.module_objects()
