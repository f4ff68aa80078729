"""Other users and a tokens file shared with a group (preloadrun --group).

The owner publishes the tokens file and its lock file with mode 0640 and the
group. A member of the group reads the file and tests the owner's lock:
`preloadrun check`, `preloadrun --attach` and the PKCS#11 module all see the
owner live. The member can neither write the lock file nor lock it while the
owner lives. Anyone else is told that the file cannot be checked (check exits
3), never that the owner is dead."""

import grp
import os
import signal
import subprocess
import textwrap

import pytest

from conftest import ATTACKER, PY, SERVICE, TIMEOUT, VICTIM
from module_lines import one_module_line
from procs import wait_for

OUTSIDER = 2002  # another local user, not in the group


def shared_group():
    for name in ("nogroup", "users"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            pass
    pytest.skip("needs a group named nogroup or users for --group")


def start_owner(machine, group, *args):
    """VICTIM's preloadrun (with `args`) publishing HOME/app/tokens.json for
    `group`; returns (process, tokens file path)."""
    home = machine.home(VICTIM)
    os.chmod(home, 0o711)
    app = os.path.join(home, "app")
    os.mkdir(app)
    os.chown(app, VICTIM, group.gr_gid)
    os.chmod(app, 0o750)
    tok = os.path.join(app, "tokens.json")
    owner = machine.spawn(VICTIM, [machine.preloadrun, "-q", "--group", group.gr_name, "-f", tok,
                                   *args, "--", "sleep", "120"],
                          groups=(SERVICE, group.gr_gid), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(tok) or owner.poll() is not None, TIMEOUT,
             what="the tokens file")
    assert owner.poll() is None, owner.stderr.read()
    return owner, tok


def stop_owner(owner, tok):
    owner.send_signal(signal.SIGTERM)  # forwarded to sleep, which dies of it
    assert owner.wait(TIMEOUT) == 128 + signal.SIGTERM, owner.stderr.read()
    assert not os.path.exists(tok) and not os.path.exists(tok + ".lock")


def module_log(machine, uid, groups, tok):
    """The PKCS#11 module's log lines when `uid` initialises it with `tok`."""
    env = machine.env(uid, NFAST_NFKM_TOKENSFILE=tok, PRELOADRUN_PKCS11_LOG="stderr",
                      PRELOADRUN_PKCS11_LOG_LEVEL="info")
    r = machine.run(uid, [os.environ["P11_DRIVER"], "initargs", os.environ["PKCS11_MODULE"]],
                    env=env, groups=groups)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stderr


def test_a_group_member_sees_the_owner_live(shared):
    group = shared_group()
    owner, tok = start_owner(shared, group)
    member = (SERVICE, group.gr_gid)

    r = shared.run(ATTACKER, [shared.preloadrun, "check", tok], groups=member)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{tok}: live, owned by live preloadrun pid {owner.pid}"), r.stdout
    for path in (tok, tok + ".lock"):
        st = os.stat(path)
        assert (st.st_mode & 0o7777, st.st_gid) == (0o640, group.gr_gid), path

    r = shared.run(ATTACKER, [shared.preloadrun, "-q", "--attach", tok, "--", "true"],
                   groups=member)
    assert (r.returncode, r.stderr) == (0, "")

    # The module sees the owner live, and does not use the file: what it
    # lists was loaded for the owner's user (see the test below).
    log = module_log(shared, ATTACKER, member, tok)
    assert (f"tokens file {tok} not used, although live (owned by live preloadrun pid "
            f"{owner.pid}): it was published by uid {VICTIM}") in log, log
    assert "dead" not in log, log
    log = module_log(shared, VICTIM, member, tok)  # the owner's own user uses it
    assert f"using tokens file {tok} (owned by live preloadrun pid {owner.pid}" in log, log
    assert "not used" not in log, log
    stop_owner(owner, tok)


def test_a_member_is_told_at_c_initialize_that_the_owner_s_tokens_are_not_its_own(shared):
    # The tokens preloadrun loaded belong to its user: the HSM service lets
    # no one else use them. A member of the file's group whose application
    # uses the file is told so at C_Initialize, on stderr, with no log asked
    # for, and its login checks the PIN, instead of a login that takes any
    # PIN and a first C_Sign that fails.
    if os.environ.get("PRELOADRUN_SANITIZE") == "1":
        pytest.skip("pkcs11-tool cannot load the ASan-built module; runs in the regular build")
    group = shared_group()
    passfile = shared.file_for(VICTIM, "pass", "victim passphrase\n")
    for argv in (["softcard", "create", "mycard"],
                 ["key", "generate", "--type", "ec-p256", "--label", "k", "--id", "01",
                  "--protect", "softcard:mycard"]):
        r = shared.run(VICTIM, [shared.hsmsim, *argv, "--passphrase-file", passfile])
        assert r.returncode == 0, r.stderr
    owner, tok = start_owner(shared, group, "-s", "mycard", "--passphrase-file", passfile)
    member = (SERVICE, group.gr_gid)
    argv = ["pkcs11-tool", "--module", os.environ["PKCS11_MODULE"], "--token-label", "mycard",
            "--login", "--pin", "any PIN", "--list-objects"]

    r = shared.run(ATTACKER, argv, env=shared.env(ATTACKER, NFAST_NFKM_TOKENSFILE=tok),
                   groups=member)
    assert r.returncode != 0 and "CKR_PIN_INCORRECT" in r.stdout + r.stderr, r
    line = one_module_line(r.stderr)
    assert line.endswith(
        f": warning: tokens file {tok} not used, although live (owned by live preloadrun pid "
        f"{owner.pid}): it was published by uid {VICTIM} and this process runs as uid "
        f"{ATTACKER}: the tokens it lists are loaded for uid {VICTIM}, and the HSM service lets "
        f"no other user use them; run the application as uid {VICTIM}, or without "
        f"NFAST_NFKM_TOKENSFILE (C_Login with the token's passphrase)"), line

    # The owner's own user: any PIN, nothing on stderr.
    r = shared.run(VICTIM, argv, env=shared.env(VICTIM, NFAST_NFKM_TOKENSFILE=tok),
                   groups=member)
    assert r.returncode == 0 and "label:      k" in r.stdout, r
    assert "libpreloadrun-pkcs11" not in r.stderr, r.stderr
    stop_owner(owner, tok)


def test_a_group_member_can_neither_write_nor_lock_the_lock_while_the_owner_lives(shared):
    group = shared_group()
    owner, tok = start_owner(shared, group)
    lock = tok + ".lock"
    script = textwrap.dedent(f"""
        import errno, fcntl, os, struct
        try:
            os.open({lock!r}, os.O_RDWR)
            print("opened for writing")
        except PermissionError:
            print("no write")
        fd = os.open({lock!r}, os.O_RDONLY)
        for name, cmd in (("OFD", fcntl.F_OFD_SETLK), ("POSIX", fcntl.F_SETLK)):
            try:
                fcntl.fcntl(fd, cmd, struct.pack("hhqqi4x", fcntl.F_RDLCK, 0, 0, 0, 0))
                print(name, "locked")
            except OSError as e:
                print(name, "refused" if e.errno in (errno.EAGAIN, errno.EACCES) else e)
        """)
    r = shared.run(ATTACKER, [PY, "-c", script], groups=(SERVICE, group.gr_gid))
    assert r.stdout.split("\n") == ["no write", "OFD refused", "POSIX refused", ""], \
        r.stdout + r.stderr
    r = shared.run(ATTACKER, [shared.preloadrun, "check", tok], groups=(SERVICE, group.gr_gid))
    assert r.returncode == 0, r.stderr
    stop_owner(owner, tok)


def test_another_user_is_told_it_cannot_check_not_that_the_owner_is_dead(shared):
    group = shared_group()
    owner, tok = start_owner(shared, group)
    outsider = (SERVICE,)

    r = shared.run(OUTSIDER, [shared.preloadrun, "check", tok], groups=outsider)
    assert r.returncode == 3, r
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"preloadrun: {tok}: cannot check: "), r.stderr
    assert "Permission denied" in r.stderr and "dead" not in r.stderr, r.stderr

    r = shared.run(OUTSIDER, [shared.preloadrun, "status", "--json", tok], groups=outsider)
    assert r.returncode == 3, r

    r = shared.run(OUTSIDER, [shared.preloadrun, "--attach", tok, "--", "true"], groups=outsider)
    assert r.returncode == 125, r
    assert "cannot check" in r.stderr and "dead" not in r.stderr, r.stderr

    log = module_log(shared, OUTSIDER, outsider, tok)
    assert f"tokens file {tok} not used (cannot check)" in log, log
    assert "dead" not in log, log

    # The owner never noticed.
    r = shared.run(ATTACKER, [shared.preloadrun, "check", tok], groups=(SERVICE, group.gr_gid))
    assert r.returncode == 0, r.stderr
    stop_owner(owner, tok)
