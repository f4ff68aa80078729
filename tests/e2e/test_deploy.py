"""Running as a service: the systemd units in dist/systemd, and preloadrun as
a container's entrypoint (PID 1 of a PID namespace).

The units are checked three ways: `systemd-analyze verify` reads them as
systemd would (in a scratch root holding the units, the programs and the
system's targets); `systemd-analyze condition` evaluates their [Unit]
conditions and asserts as the system's service manager (root) does; and their
ExecStartPre= and ExecStart= lines are run the way systemd runs a Type=notify
service (as User=/Group= with their groups, environment from Environment=,
%i, %d and $$ expanded, RuntimeDirectory= and StateDirectory= created for the
user, NOTIFY_SOCKET set, SIGTERM to stop), with the fixed paths under /run
and /var/lib moved into a scratch directory.
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
from procs import proc_status, run_as_argv

DIST = os.environ.get("PRELOADRUN_DIST", "")
UNITS = ("hsmfleet.service", "hsmsim.service", "preloadrun@.service")
# The users the units run as, as the host's user database would have them:
# name -> (uid, gid, supplementary gids). None of them needs an entry in
# /etc/passwd. An application's user is in the hsmsim group (to reach the
# client socket), as the units' comments tell the operator.
HSMSIM_UID, APP_UID = 2100, 2000
USERS = {"root": (0, 0, ()), "hsmsim": (HSMSIM_UID, HSMSIM_UID, ()),
         "myapp": (APP_UID, APP_UID, (HSMSIM_UID,))}
GROUPS = {"root": 0, "hsmsim": HSMSIM_UID, "myapp": APP_UID}
# `systemctl edit preloadrun@mycard` as the unit's comment says.
APP_DROPIN = [("User", "myapp"), ("Group", "myapp")]
# The clients find the service's uid by the name "hsmsim" in the user
# database; with no such entry here, they are told it.
LOOKUP = {"HSMSIM_SERVICE_USER": str(HSMSIM_UID)}


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
    os.symlink("usr/bin", os.path.join(root, "bin"))  # merged /usr, as on Debian 12
    for program in programs:
        shutil.copy(program, bindir)
    shutil.copy("/bin/sh", bindir)  # ExecStartPre='s shell
    shutil.copy("/bin/kill", bindir)  # hsmfleet.service's ExecReload=
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
            if "hsmsim" in line or "hsmfleet" in line or "preloadrun" in line]
    return r.returncode, ours


def test_units_pass_systemd_analyze_verify(dist, scratch):
    programs = [executable("HSMFLEET"), executable("HSMSIM"), executable("PRELOADRUN")]
    units = verify_root(scratch, dist, programs)
    install_man_pages(scratch)
    rc, complaints = analyze(scratch, "hsmfleet.service", "hsmsim.service",
                             "preloadrun@mycard.service")
    assert rc == 0 and complaints == [], complaints
    # The check itself notices a broken unit (so a pass above means something).
    with open(os.path.join(units, "hsmsim.service"), "a") as f:
        f.write("[Service]\nType=notifyy\n")
    os.remove(os.path.join(scratch, "usr/bin/preloadrun"))
    rc, complaints = analyze(scratch, "hsmsim.service", "preloadrun@mycard.service")
    assert any("notifyy" in line for line in complaints), complaints
    assert rc != 0 and any("preloadrun" in line and "executable" in line
                           for line in complaints), complaints


def conditions(root, unit):
    """`systemd-analyze condition --unit`: the unit's [Unit] Condition*= and
    Assert*= lines, evaluated by systemd as the system's service manager
    (root, as this test runs) would before starting it."""
    r = subprocess.run(["systemd-analyze", "condition", f"--root={root}", f"--unit={unit}"],
                       capture_output=True, text=True, timeout=60)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_unit_conditions_and_asserts_hold_for_the_system_manager(dist, scratch):
    assert os.geteuid() == 0, "the system manager is root: run as root"
    units = verify_root(scratch, dist, [executable("HSMFLEET"), executable("HSMSIM"),
                                        executable("PRELOADRUN")])
    for unit in ("hsmfleet.service", "hsmsim.service", "preloadrun@mycard.service"):
        rc, out = conditions(scratch, unit)
        assert rc == 0, f"{unit} would not start:\n{out}"
    # The check notices a unit that cannot start: AssertUser= tests the
    # manager's user, which is root for every system service.
    with open(os.path.join(units, "preloadrun@.service")) as f:
        text = f.read()
    with open(os.path.join(units, "preloadrun@.service"), "w") as f:
        f.write(text.replace("[Unit]\n", "[Unit]\nAssertUser=!root\n", 1))
    rc, out = conditions(scratch, "preloadrun@mycard.service")
    assert rc != 0 and "AssertUser=!root failed" in out, out


# -- the units' commands, run as systemd runs them ------------------------------

class Notify:
    """A NOTIFY_SOCKET that collects the datagrams of one service."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o777)  # as systemd's: any service's user may write

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


class UnitFailed(AssertionError):
    def __init__(self, line, status, log):
        super().__init__(f"{line} exited with status {status}; log:\n{log}")
        self.status, self.log = status, log


def command_argv(line, expand):
    """A unit's command line as systemd splits it: words (quotes removed),
    specifiers expanded, "$$" a literal "$"; a leading "-" (failure
    ignored) is not used by these units."""
    words = [expand(word) for word in shlex.split(line)]
    for word in words:
        assert "$" not in word.replace("$$", ""), f"environment expansion in {line!r}"
    return [word.replace("$$", "$") for word in words]


class UnitRunner:
    """Runs a unit's ExecStartPre= and ExecStart= with /run and /var/lib moved
    under `root`, as its User= and Group= (from USERS and GROUPS)."""

    def __init__(self, dist, root, programs):
        self.dist, self.root, self.programs = dist, root, programs
        self.procs = []

    def moved(self, text):
        for top in ("/run/", "/var/lib/"):
            text = text.replace(top, os.path.join(self.root, top.strip("/")) + "/")
        return text

    def start(self, unit, instance=None, credentials=None, env_extra=None, dropin=()):
        """Starts `unit` with the [Service] settings of `dropin` (key, value)
        overriding the unit's; raises UnitFailed when an ExecStartPre=
        fails."""
        service = read_unit(os.path.join(self.dist, "systemd", unit))["Service"]
        service = [(k, v) for k, v in service if k not in {k2 for k2, _ in dropin}]
        service += list(dropin)

        def expand(text):
            text = text.replace("%i", instance or "")
            text = text.replace("%d", credentials or "")
            text = text.replace("%%", "%")
            return self.moved(text)

        user = (values(service, "User") or ["root"])[-1]
        group = (values(service, "Group") or [None])[-1]
        uid, gid = USERS[user][0], GROUPS[group] if group else USERS[user][1]
        run_as = as_user(user, group)

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
                os.chown(path, uid, gid)
        env.update(env_extra or {})
        # The credentials directory (%d) belongs to the service's user.
        if credentials:
            for dirpath, _, names in os.walk(credentials):
                for path in [dirpath] + [os.path.join(dirpath, n) for n in names]:
                    os.chown(path, uid, gid)
        # An empty ExecStartPre= resets the list (as in a drop-in).
        pre_lines = values(service, "ExecStartPre")
        if "" in pre_lines:
            pre_lines = pre_lines[len(pre_lines) - pre_lines[::-1].index(""):]
        for line in pre_lines:
            pre = command_argv(line, expand)
            assert pre[0].startswith("/"), "an ExecStartPre= program outside PATH"
            r = subprocess.run(run_as + pre, env=env, stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=TIMEOUT)
            if r.returncode != 0:
                raise UnitFailed(line, r.returncode, r.stdout + r.stderr)
        argv = command_argv(values(service, "ExecStart")[0], expand)
        assert "/" not in argv[0], "units name the program, systemd finds it"
        argv = run_as + [self.programs[argv[0]]] + argv[1:]
        notify = Notify(os.path.join(self.root, f"notify{len(self.procs)}"))
        env["NOTIFY_SOCKET"] = notify.path
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


def as_user(name, group=None):
    """argv prefix running a command as user `name` (and group `group`,
    default the user's), with the user's supplementary groups."""
    uid, gid, groups = USERS[name]
    return run_as_argv(uid, GROUPS[group] if group else gid, groups)


def start_hsmsim_with_mycard(units, scratch):
    """hsmsim.service started, the softcard mycard created (as root, an
    operator with the admin socket), its passphrase in a credentials
    directory as LoadCredentialEncrypted= gives it (%d)."""
    sim, sim_env = units.start("hsmsim.service")
    admin = {**sim_env, **LOOKUP, "PATH": os.environ["PATH"]}
    admin.pop("NOTIFY_SOCKET")
    credentials = os.path.join(scratch, "credentials")
    os.mkdir(credentials, 0o700)
    passfile = os.path.join(credentials, "passphrase")
    with open(os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(PASS1 + "\n")
    subprocess.run([units.programs["hsmsim"], "softcard", "create", "mycard",
                    "--passphrase-file", passfile],
                   env=admin, check=True, capture_output=True, timeout=TIMEOUT)
    return sim, admin, credentials


def test_units_start_notify_ready_and_stop_cleanly(dist, scratch):
    hsmsim, preloadrun = executable("HSMSIM"), executable("PRELOADRUN")
    units = UnitRunner(dist, scratch, {"hsmsim": hsmsim, "preloadrun": preloadrun})
    try:
        sim, admin, credentials = start_hsmsim_with_mycard(units, scratch)
        assert os.stat(units.moved("/var/lib/hsmsim/kmdata")).st_uid == HSMSIM_UID

        pre, pre_env = units.start("preloadrun@.service", instance="mycard",
                                   credentials=credentials, dropin=APP_DROPIN, env_extra=LOOKUP)
        tokens = units.moved("/run/preloadrun/mycard/tokens.json")
        assert os.path.exists(tokens), units.log("preloadrun@.service")
        assert os.stat(tokens).st_uid == APP_UID
        # The application, as its user, points at the fixed path; the file is live.
        app_env = {**admin, "NFAST_NFKM_TOKENSFILE": tokens}
        r = subprocess.run(as_user("myapp") + [preloadrun, "check"], env=app_env,
                           capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
        r = subprocess.run(as_user("myapp") + [preloadrun, "--attach", tokens, "--", "sh", "-c",
                                               'echo "$NFAST_NFKM_TOKENSFILE $CKNFAST_RELOAD_KEYS"'],
                           env=admin, capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0 and r.stdout == f"{tokens} 1\n", r.stderr
        loaded = subprocess.run([hsmsim, "module", "list", "--json"], env=admin, text=True,
                                capture_output=True, check=True).stdout
        assert '"objects": 0' not in loaded, loaded

        # systemctl stop preloadrun@mycard: exit 0, file gone, tokens unloaded.
        assert units.stop(pre) == 0, units.log("preloadrun@.service")
        assert not os.path.exists(tokens) and not os.path.exists(tokens + ".lock")
        r = subprocess.run(as_user("myapp") + [preloadrun, "check"], env=app_env,
                           capture_output=True, text=True)
        assert r.returncode == 1
        loaded = subprocess.run([hsmsim, "module", "list", "--json"], env=admin, text=True,
                                capture_output=True, check=True).stdout
        assert loaded.count('"objects": 0') == 3, loaded
        # systemctl stop hsmsim: exit 0, sockets removed.
        assert units.stop(sim) == 0, units.log("hsmsim.service")
        assert not os.path.exists(units.moved("/run/hsmsim/client.sock"))
    finally:
        units.cleanup()


def test_preloadrun_unit_refuses_to_run_as_root(dist, scratch):
    hsmsim, preloadrun = executable("HSMSIM"), executable("PRELOADRUN")
    units = UnitRunner(dist, scratch, {"hsmsim": hsmsim, "preloadrun": preloadrun})
    try:
        _, _, credentials = start_hsmsim_with_mycard(units, scratch)
        # No User= (the operator skipped `systemctl edit`), or User=root.
        for dropin in ((), (("User", "root"),)):
            with pytest.raises(UnitFailed) as failed:
                units.start("preloadrun@.service", instance="mycard", credentials=credentials,
                            dropin=dropin, env_extra=LOOKUP)
            assert failed.value.status == 1
            lines = failed.value.log.splitlines()
            assert lines == ["preloadrun@mycard: refusing to run as root: set User= and Group= "
                             "to the user of the application (systemctl edit "
                             "preloadrun@mycard)"], lines
            assert not os.path.exists(units.moved("/run/preloadrun/mycard/tokens.json"))
        # An empty ExecStartPre= in a drop-in lets an application that runs
        # as root have it.
        pre, _ = units.start("preloadrun@.service", instance="mycard", credentials=credentials,
                             dropin=[("ExecStartPre", "")], env_extra=LOOKUP)
        assert units.stop(pre) == 0, units.log("preloadrun@.service")
    finally:
        units.cleanup()


# -- PID 1 of a container -------------------------------------------------------

def proc_field(pid, field):
    """The words of `field` in /proc/PID/status (None when gone or missing)."""
    value = (proc_status(pid) or {}).get(field)
    return value.split() if value is not None else None


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
