"""Attacker tests: the HSM service's socket path.

Another local user who gets to a socket path first (a directory under /tmp
created before the victim's, a fake server bound at a shared path, a stale
variable pointing at it) must learn nothing: no passphrase, no PIN, no
request at all. hsmsim must not serve from a directory that another user
owns or can write. The default paths must be safe without XDG_RUNTIME_DIR."""

import os
import shutil
import subprocess
import textwrap

import pytest

from conftest import ATTACKER, HERE, PY, SERVICE, VICTIM
from module_lines import one_module_line

PASSPHRASE = "victim passphrase 7"


def start_fake(machine, socket_path, log_path, token="mycard"):
    """The attacker's fake service at socket_path, logging requests to log_path."""
    proc = machine.spawn(ATTACKER, [PY, os.path.join(HERE, "fake_service.py"), socket_path,
                                    log_path, token],
                         env=machine.env(ATTACKER, PYTHONPATH=HERE,
                                         WIRE_PB2_DIR=os.environ["WIRE_PB2_DIR"]),
                         groups=(), stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "listening"
    return proc


def attacker_dir(machine, name="attacker", mode=0o755):
    path = os.path.join(machine.root, name)
    os.mkdir(path)
    os.chmod(path, mode)
    os.chown(path, ATTACKER, ATTACKER)
    return path


def requests_seen(log_path):
    try:
        with open(log_path) as f:
            return [line.split()[0] for line in f]
    except FileNotFoundError:
        return []


def assert_nothing_learnt(log_path):
    assert requests_seen(log_path) == [], "the fake service received requests"
    if os.path.exists(log_path):
        with open(log_path, "rb") as f:
            assert PASSPHRASE.encode() not in f.read()


def victim_preloadrun(machine, *args, env=None):
    passfile = machine.file_for(VICTIM, "pass", PASSPHRASE + "\n")
    return machine.run(VICTIM, [machine.preloadrun, "-s", "mycard", "--passphrase-file", passfile,
                                *args], env=env)


def test_fake_service_in_another_users_directory_learns_nothing(machine):
    # The attacker owns a directory and serves a fake hsmsim in it; the
    # victim is pointed at it (a shared path, a stale variable).
    d = attacker_dir(machine)
    sock, log = os.path.join(d, "client.sock"), os.path.join(d, "requests.log")
    start_fake(machine, sock, log)
    r = victim_preloadrun(machine, "--socket", sock, "--", "true")
    assert r.returncode == 125, r.stderr
    assert f"belongs to uid {ATTACKER}" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert_nothing_learnt(log)


def test_fake_service_in_a_shared_sticky_directory_learns_nothing(machine):
    # /tmp-like: root's, mode 1777. The attacker binds first.
    d = os.path.join(machine.root, "shared-tmp")
    os.mkdir(d)
    os.chmod(d, 0o1777)
    sock, log = os.path.join(d, "hs.sock"), os.path.join(machine.root, "requests.log")
    start_fake(machine, sock, log)
    r = victim_preloadrun(machine, "--socket", sock, "--", "true")
    assert r.returncode == 125, r.stderr
    assert "writable by group or others" in r.stderr, r.stderr
    assert_nothing_learnt(log)


def test_a_service_running_as_another_uid_is_refused(machine):
    # The directory and the socket file pass every check (the victim's own
    # directory, a socket created by root), but the process listening runs
    # as the attacker: only SO_PEERCRED tells, and the victim must ask.
    d = os.path.join(machine.home(VICTIM), "run")
    os.mkdir(d, 0o700)
    os.chown(d, VICTIM, VICTIM)
    sock, log = os.path.join(d, "client.sock"), os.path.join(machine.root, "requests.log")
    script = textwrap.dedent(f"""
        import os, socket, sys
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind({sock!r})
        os.chown({sock!r}, {VICTIM}, {VICTIM})
        os.setgroups([]); os.setresgid({ATTACKER}, {ATTACKER}, {ATTACKER})
        os.setresuid({ATTACKER}, {ATTACKER}, {ATTACKER})
        s.listen(4)
        print("listening", flush=True)
        while True:
            c, _ = s.accept()
            data = c.recv(65536)
            with open({log!r}, "ab") as f:
                f.write(data.hex().encode() + b"\\n" if data else b"")
            c.close()
        """)
    open(log, "w").close()
    os.chmod(log, 0o666)
    proc = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    machine._procs.append(proc)
    assert proc.stdout.readline().strip() == "listening"
    r = victim_preloadrun(machine, "--socket", sock, "--", "true")
    assert r.returncode == 125, r.stderr
    assert f"runs as uid {ATTACKER}" in r.stderr, r.stderr
    with open(log) as f:
        assert f.read().strip() == "", "the process behind the socket received bytes"


def test_a_user_the_socket_refuses_is_told_so_and_hsmsim_exits_3(shared):
    # The service's socket is mode 0660, group SERVICE: outside that group,
    # connecting is refused (EACCES). The service cannot be reached: exit 3,
    # one line saying why, not the "is hsmsim serve running?" of a missing
    # socket.
    r = shared.run(ATTACKER, [shared.hsmsim, "softcard", "list"], groups=())
    assert r.returncode == 3, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert shared.socket in lines[0] and "Permission denied" in lines[0], lines
    assert f"uid {ATTACKER}" in lines[0] and "hsmsim serve" not in lines[0], lines
    assert lines[0].endswith(
        f"the socket (mode 0660, owner uid {SERVICE}, group {SERVICE}) is not open to this "
        f"user (uid {ATTACKER}) but to group {SERVICE}, which this process is not in: add the "
        f"user to group {SERVICE} (usermod -aG {SERVICE} USER), then log in again"), lines
    r = shared.run(ATTACKER, [shared.hsmsim, "softcard", "list"])  # in the group
    assert r.returncode == 0, r.stderr


def test_a_socket_directory_open_to_a_group_names_the_group(shared):
    # The socket cannot even be looked up: its directory is open to the
    # service's group only.
    srv = os.path.dirname(shared.socket)
    os.chmod(srv, 0o750)
    os.chown(srv, SERVICE, SERVICE)
    r = shared.run(ATTACKER, [shared.hsmsim, "softcard", "list"], groups=())
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert r.stderr == (
        f"hsmsim: cannot reach the HSM service at {shared.socket}: Permission denied: its "
        f"directory {srv} (mode 0750, owner uid {SERVICE}, group {SERVICE}) is not open to this "
        f"user (uid {ATTACKER}) but to group {SERVICE}, which this process is not in: add the "
        f"user to group {SERVICE} (usermod -aG {SERVICE} USER), then log in again\n"), r.stderr
    r = shared.run(ATTACKER, [shared.hsmsim, "softcard", "list"])  # in the group
    assert r.returncode == 0, r.stderr


def test_an_application_the_socket_refuses_is_told_which_group_it_needs(shared):
    # pkcs11-tool as a user outside the socket's group: one line from the
    # module, on stderr, with no log asked for; preloadrun says the same.
    if os.environ.get("PRELOADRUN_SANITIZE") == "1":
        pytest.skip("pkcs11-tool cannot load the ASan-built module; runs in the regular build")
    argv = ["pkcs11-tool", "--module", os.environ["PKCS11_MODULE"], "--list-slots"]
    r = shared.run(VICTIM, argv, groups=())
    assert r.returncode != 0
    line = one_module_line(r.stderr)
    assert line.endswith(
        f": error: C_Initialize failed: cannot reach the HSM service at {shared.socket}: "
        f"Permission denied: the socket (mode 0660, owner uid {SERVICE}, group {SERVICE}) is "
        f"not open to this user (uid {VICTIM}) but to group {SERVICE}, which this process is "
        f"not in: add the user to group {SERVICE} (usermod -aG {SERVICE} USER), then log in "
        f"again"), line
    assert "libpreloadrun-pkcs11" not in r.stdout
    r = shared.run(VICTIM, argv)  # in the group: nothing from the module
    assert r.returncode == 0 and "libpreloadrun-pkcs11" not in r.stderr, r.stderr

    r = shared.run(VICTIM, [shared.preloadrun, "--", "true"], groups=())
    assert r.returncode == 125, r.stderr
    assert r.stderr.endswith(f"which this process is not in: add the user to group {SERVICE} "
                             f"(usermod -aG {SERVICE} USER), then log in again\n"), r.stderr


def test_pkcs11_module_sends_no_pin_to_a_fake_service(machine):
    d = attacker_dir(machine)
    sock, log = os.path.join(d, "client.sock"), os.path.join(d, "requests.log")
    start_fake(machine, sock, log)
    driver = os.environ["P11_DRIVER"]
    r = machine.run(VICTIM, [driver, "sign", os.environ["PKCS11_MODULE"], "mycard", PASSPHRASE,
                             "01", "1", "1"],
                    env=machine.env(VICTIM, HSMSIM_SOCKET=sock, PRELOADRUN_PKCS11_LOG="stderr"))
    assert r.returncode != 0, r.stdout + r.stderr
    assert f"belongs to uid {ATTACKER}" in r.stderr, r.stderr
    assert_nothing_learnt(log)


def test_hsmsim_refuses_a_socket_directory_it_does_not_own_or_others_can_write(machine):
    victim_world = os.path.join(machine.home(VICTIM), "kmdata")
    sticky = os.path.join(machine.root, "sticky")  # /tmp-like: root's, 1777
    os.mkdir(sticky)
    os.chmod(sticky, 0o1777)
    open_dir = os.path.join(machine.home(VICTIM), "open")  # the victim's own, but 0777
    os.mkdir(open_dir)
    os.chmod(open_dir, 0o777)
    os.chown(open_dir, VICTIM, VICTIM)
    for d, why in [(attacker_dir(machine, "theirs", 0o777), f"belongs to uid {ATTACKER}"),
                   (attacker_dir(machine, "theirs-private", 0o700), f"belongs to uid {ATTACKER}"),
                   (sticky, "belongs to uid 0"),
                   (open_dir, "writable by group or others")]:
        env = machine.env(VICTIM, NFAST_KMDATA=victim_world,
                          HSMSIM_SOCKET=os.path.join(d, "c.sock"),
                          HSMSIM_ADMIN_SOCKET=os.path.join(machine.home(VICTIM), "a.sock"))
        r = machine.run(VICTIM, [machine.hsmsim, "serve"], env=env, timeout=10)
        assert r.returncode == 1, (d, r.stdout, r.stderr)
        assert why in r.stderr, (d, r.stderr)
        assert not os.path.exists(os.path.join(d, "c.sock"))


def test_default_paths_without_xdg_runtime_dir_cannot_be_taken_first(machine):
    # The attacker prepares the old /tmp defaults (a fake service at
    # /tmp/hsmsim-UID/client.sock, a /tmp/preloadrun-UID directory). The
    # victim, with no XDG_RUNTIME_DIR and no HSMSIM_SOCKET (cron, su), runs
    # its own service and preloadrun on the defaults: everything works and
    # the attacker sees nothing.
    old_sock_dir = f"/tmp/hsmsim-{VICTIM}"
    old_tokens_dir = f"/tmp/preloadrun-{VICTIM}"
    for d in (old_sock_dir, old_tokens_dir):
        shutil.rmtree(d, ignore_errors=True)
        os.mkdir(d, 0o777)
        os.chmod(d, 0o777)
        os.chown(d, ATTACKER, ATTACKER)
    try:
        log = os.path.join(machine.root, "requests.log")
        start_fake(machine, os.path.join(old_sock_dir, "client.sock"), log)
        env = machine.env(VICTIM, HSMSIM_SOCKET=None, XDG_RUNTIME_DIR=None)
        serve = machine.spawn(VICTIM, [machine.hsmsim, "serve", "--modules", "2",
                                       "--init-delay-ms", "0"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        ready = serve.stdout.readline()
        assert ready.startswith("hsmsim: ready"), serve.stderr.read() if serve.poll() else ready
        home = machine.home(VICTIM)
        assert f"socket {home}/.hsmsim/client.sock" in ready, ready
        assert os.stat(f"{home}/.hsmsim").st_mode & 0o777 == 0o700
        # The world too goes to its default, made private on the way.
        assert os.stat(f"{home}/.local/share/hsmsim/kmdata/world").st_mode & 0o777 == 0o600
        assert os.stat(f"{home}/.local").st_mode & 0o777 == 0o700
        passfile = machine.file_for(VICTIM, "pass", PASSPHRASE + "\n")
        r = machine.run(VICTIM, [machine.hsmsim, "softcard", "create", "mycard",
                                 "--passphrase-file", passfile], env=env)
        assert r.returncode == 0, r.stderr
        r = machine.run(VICTIM, [machine.preloadrun, "-q", "-s", "mycard", "--passphrase-file",
                                 passfile, "--", "sh", "-c",
                                 'echo "$NFAST_NFKM_TOKENSFILE"; echo "$HSMSIM_SOCKET"'], env=env)
        assert r.returncode == 0, r.stderr
        tokens_file, socket_path = r.stdout.split()
        assert tokens_file.startswith(f"{home}/.preloadrun/tokens-"), tokens_file
        assert socket_path == f"{home}/.hsmsim/client.sock"
        assert_nothing_learnt(log)
        assert os.listdir(old_tokens_dir) == []
    finally:
        for d in (old_sock_dir, old_tokens_dir):
            shutil.rmtree(d, ignore_errors=True)


def test_child_talks_to_the_service_given_with_socket_not_to_a_stale_variable(shared):
    # The victim's environment still names the attacker's socket; preloadrun
    # is given the real one with --socket. The application under preloadrun
    # must use the same service, so its PKCS#11 module signs there and the
    # attacker learns nothing.
    d = attacker_dir(shared)
    fake, log = os.path.join(d, "client.sock"), os.path.join(d, "requests.log")
    start_fake(shared, fake, log)
    passfile = shared.file_for(VICTIM, "pass", PASSPHRASE + "\n")
    shared.run(VICTIM, [shared.hsmsim, "softcard", "create", "mycard", "--passphrase-file",
                        passfile])
    r = shared.run(VICTIM, [shared.hsmsim, "key", "generate", "--type", "ec-p256", "--label", "k",
                            "--id", "01", "--protect", "softcard:mycard", "--passphrase-file",
                            passfile])
    assert r.returncode == 0, r.stderr
    env = shared.env(VICTIM, HSMSIM_SOCKET=fake)
    r = shared.run(VICTIM, [shared.preloadrun, "-q", "--socket", shared.socket, "-s", "mycard",
                            "--passphrase-file", passfile, "--",
                            os.environ["P11_DRIVER"], "sign", os.environ["PKCS11_MODULE"],
                            "mycard", "any-pin", "01", "20", "2"], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok=40 errors=0" in r.stdout, r.stdout
    assert_nothing_learnt(log)
    del env
    assert SERVICE != VICTIM
