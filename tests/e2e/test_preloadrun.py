"""preloadrun end to end: the real binary against a real `hsmsim serve`.

The contract is preloadrun(1) and preloadrun-tokens(5): exit statuses, the
125 failures (one error line, nothing left behind), signal forwarding (each
signal once), what the child gets (mask, dispositions, descriptors,
environment, no passphrase), the tokens file (mode, content, liveness,
takeover, atomic rewrites), reaping orphans, service mode and passphrase
sources. Fixtures: conftest.py (`pr`, `pr_card`); helpers:
preloadrun_support.py.
"""

import grp
import json
import os
import re
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import pexpect
import pytest

from preloadrun_support import (PASS1, PASS2, PY, TIMEOUT, assert_one_error_line, children_of,
                                dir_entries, error_lines, proc_status, read_counts, read_report,
                                wait_for)
from procs import proc_stat

# A child that dumps core (SIGQUIT) must not litter: no core files.
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")
FORWARDED = ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2", "WINCH", "CONT", "ALRM"]


# -- helpers -------------------------------------------------------------------

def boot_id():
    with open("/proc/sys/kernel/random/boot_id") as f:
        return f.read().strip()


def start_time(pid):
    return int(proc_stat(pid)[19])  # field 22


def assert_nothing_left(pr, *paths):
    """No tokens file or lock in the private directories (nor at `paths`),
    nothing loaded on any module."""
    assert dir_entries(pr.tokdir) == [], f"left in {pr.tokdir}: {dir_entries(pr.tokdir)}"
    default_dir = os.path.join(pr.xdg, "preloadrun")
    assert dir_entries(default_dir) == [], f"left in {default_dir}: {dir_entries(default_dir)}"
    for path in paths:
        assert not os.path.lexists(path), f"{path} left behind"
        assert not os.path.lexists(path + ".lock"), f"{path}.lock left behind"
    objects = pr.module_objects()
    assert all(n == 0 for n in objects.values()), f"objects left on modules: {objects}"


def card_args(pr):
    return ["-s", "c1", "--passphrase-file", pr.card_pass]


def start_supervised(pr, *args, until=None, sleep_ms=None):
    """preloadrun ARGS -- probe --report R --count C --ready READY [--until-file U]
    [--sleep-ms MS: the probe's own limit, 30 s unless given]: returns (popen,
    files) once the probe is set up."""
    files = {k: pr.fresh(k) for k in ("report", "count", "ready", "until")}
    probe_args = [pr.probe, "--report", files["report"], "--count", files["count"],
                  "--ready", files["ready"]]
    probe_args += until if until is not None else ["--until-file", files["until"]]
    probe_args += ["--sleep-ms", str(sleep_ms)] if sleep_ms is not None else []
    p = pr.start(*args, "--", *probe_args, stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(files["ready"]) or p.poll() is not None,
             what="the probe to be ready")
    assert p.poll() is None, f"preloadrun exited {p.returncode}: {pr.stderr_of(p)}"
    return p, files


def finish(pr, p, timeout=TIMEOUT):
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"preloadrun did not exit within {timeout}s; stderr: {pr.stderr_of(p)}")


def end_probe(files):
    """Ends a probe started by start_supervised (it counts signals, so a
    signal does not end it)."""
    open(files["until"], "w").close()


def the_child(pr, p):
    kids = wait_for(lambda: children_of(p.pid), what="preloadrun's child")
    assert len(kids) == 1, kids
    return kids[0][0]


# -- exit statuses -------------------------------------------------------------

@pytest.mark.parametrize("status", [0, 1, 2, 126, 127, 254, 255])
def test_exit_status_passes_through(pr, status):
    r = pr.run("--", "sh", "-c", f"exit {status}")
    assert r.returncode == status, r.stderr
    assert error_lines(r.stderr) == [], r.stderr
    assert_nothing_left(pr)


@pytest.mark.parametrize("sig", ["TERM", "HUP", "QUIT", "USR1", "KILL"])
def test_child_death_by_signal_gives_128_plus_n(pr, sig):
    r = pr.run("--", "sh", "-c", f"kill -s {sig} $$; sleep 5")
    assert r.returncode == 128 + signal.Signals["SIG" + sig], r.stderr
    assert_nothing_left(pr)


@pytest.mark.parametrize("command", ["no-such-command-e2e", "/nonexistent/dir/cmd"])
def test_command_not_found_is_127_with_one_line(pr, command):
    r = pr.run("--", command, "arg")
    assert r.returncode == 127, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and command in lines[0], r.stderr
    assert_nothing_left(pr)


def test_command_not_executable_is_126_with_one_line(pr):
    path = pr.path("not-executable")
    with open(path, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(path, 0o644)
    r = pr.run("--", path)
    assert r.returncode == 126, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1 and "not-executable" in lines[0], r.stderr
    assert_nothing_left(pr)


# -- preloadrun's own failures: 125, one line, nothing left behind -------------

def test_unknown_token(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    r = pr.run("-s", "nosuchcard", "--passphrase-file", pr.card_pass, "-f", tok, "--", "true")
    assert_one_error_line(r, "nosuchcard")
    assert_nothing_left(pr, tok)


def test_wrong_passphrase_leaves_nothing(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    bad = pr.sim.passfile("not the passphrase")
    r = pr.run("-s", "c1", "--passphrase-file", bad, "-f", tok, "--", "true")
    assert_one_error_line(r, "passphrase", "c1")
    assert_nothing_left(pr, tok)


def test_command_that_cannot_run_fails_before_loading(pr_card):
    """127/126 come before any token is loaded: no load is logged."""
    pr = pr_card
    r = pr.run(*card_args(pr), "--", "no-such-command-e2e")
    assert r.returncode == 127, r.stderr
    assert "loaded" not in r.stderr and len(error_lines(r.stderr)) == 1, r.stderr
    assert_nothing_left(pr)


def test_missing_passphrase_file_is_named(pr_card):
    pr = pr_card
    missing = pr.path("no-such-passphrase")
    r = pr.run("-s", "c1", "--passphrase-file", missing, "--", "true")
    assert_one_error_line(r, "passphrase file", missing)
    assert_nothing_left(pr)


def test_no_usable_module(pr_card):
    pr = pr_card
    for n in pr.sim.modules():
        pr.sim.ok("module", "fail", n)
    tok = pr.tokens_file()
    r = pr.run(*card_args(pr), "-f", tok, "--", "true")
    assert_one_error_line(r, "usable")
    assert_nothing_left(pr, tok)


def test_no_usable_module_without_tokens(pr):
    for n in pr.sim.modules():
        pr.sim.ok("module", "fail", n)
    r = pr.run("--", "true")
    assert_one_error_line(r, "usable")
    assert_nothing_left(pr)


def test_waits_for_modules_initialising(make_service, preloadrun_bin, probe_bin):
    """A service just started may still bring its modules up: preloadrun
    waits for them rather than failing, and loads onto them."""
    from preloadrun_support import Runner
    pr = Runner(preloadrun_bin, probe_bin, make_service(modules=2, init_delay_ms=1500))
    try:
        card = pr.softcard("c1", PASS1)
        for n in pr.sim.modules():
            pr.sim.ok("module", "clear", n)
        assert all(m["state"] == "initialising" for m in pr.sim.modules().values())
        r = pr.run("-s", "c1", "--passphrase-file", card, "--", "true")
        assert r.returncode == 0, r.stderr
        assert "waiting for 2 module(s) initialising" in r.stderr, r.stderr
        assert "1 token(s) loaded" in r.stderr, r.stderr  # on the first module usable
    finally:
        pr.cleanup()


def test_wait_for_modules_initialising_is_bounded(make_service, preloadrun_bin, probe_bin):
    from preloadrun_support import Runner
    pr = Runner(preloadrun_bin, probe_bin, make_service(modules=1, init_delay_ms=60000))
    try:
        card = pr.softcard("c1", PASS1)
        pr.sim.ok("module", "clear", 1)
        start = time.monotonic()
        r = pr.run("-s", "c1", "--passphrase-file", card, "--retry-window", "1s", "--", "true")
        assert 1.0 <= time.monotonic() - start < 20
        assert_one_error_line(r, "usable")
        assert_nothing_left(pr)
    finally:
        pr.cleanup()


@pytest.mark.parametrize("how", ["env", "option"])
def test_hsm_service_unreachable(pr_card, how):
    pr = pr_card
    tok = pr.tokens_file()
    missing = pr.path("no.sock")
    env = pr.env
    if how == "env":
        env["HSMSIM_SOCKET"] = missing
        r = pr.run(*card_args(pr), "-f", tok, "--", "true", env=env)
    else:
        r = pr.run("--socket", missing, *card_args(pr), "-f", tok, "--", "true")
    assert_one_error_line(r, missing)
    assert_nothing_left(pr, tok)


def test_tokens_file_held_by_a_live_preloadrun_is_refused_naming_its_pid(pr):
    tok = pr.tokens_file()
    first, files = start_supervised(pr, "-f", tok)
    before = pr.load(tok)
    r = pr.run("-f", tok, "--", "true")
    assert_one_error_line(r, str(first.pid))
    # The owner's file is untouched and still live.
    assert pr.load(tok) == before
    assert pr.check(tok).returncode == 0
    end_probe(files)
    assert finish(pr, first) == 0
    assert_nothing_left(pr, tok)


def test_attach_to_a_missing_file(pr):
    tok = pr.tokens_file("missing.json")
    r = pr.run("--attach", tok, "--", "true")
    assert_one_error_line(r, tok)
    assert_nothing_left(pr, tok)


def test_attach_to_a_stale_file(pr):
    tok = pr.tokens_file()
    p, _ = start_supervised(pr, "-f", tok)
    pr.pids.append(the_child(pr, p))
    p.kill()
    p.wait()
    r = pr.run("--attach", tok, "--", "true")
    assert_one_error_line(r, tok)
    assert "dead" in error_lines(r.stderr)[0]
    assert os.path.exists(tok), "--attach must not remove someone else's file"


def _unsafe(pr, kind):
    """An unsafe -f location of `kind`; returns the path."""
    if kind == "group-writable-dir":
        d = pr.path("gw")
        os.mkdir(d)
        os.chmod(d, 0o770)
        return os.path.join(d, "tokens.json")
    if kind == "world-writable-dir":
        return f"/tmp/preloadrun-e2e-{os.getpid()}-{os.path.basename(pr.root)}.json"
    if kind == "symlinked-dir":
        link = pr.path("dirlink")
        os.symlink(pr.tokdir, link)
        return os.path.join(link, "tokens.json")
    if kind == "symlink-file":
        target = pr.path("target.json")
        path = pr.tokens_file()
        os.symlink(target, path)
        return path
    if kind == "dir-of-another-user":
        d = pr.path("other")
        os.mkdir(d, 0o700)
        os.chown(d, 65534, 65534)
        return os.path.join(d, "tokens.json")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["group-writable-dir", "world-writable-dir", "symlinked-dir",
                                  "symlink-file", "dir-of-another-user"])
def test_unsafe_tokens_file_location_is_refused(pr, kind):
    if kind == "dir-of-another-user" and os.geteuid() != 0:
        pytest.skip("needs root to make a directory of another user")
    path = _unsafe(pr, kind)
    r = pr.run("-f", path, "--", "true")
    assert_one_error_line(r)
    if kind == "symlink-file":
        assert os.path.islink(path)
        assert not os.path.exists(pr.path("target.json")), "followed the symlink"
        assert not os.path.lexists(path + ".lock")
        os.unlink(path)
        assert_nothing_left(pr, path)
    elif kind == "symlinked-dir":
        assert_nothing_left(pr, path)
    else:
        assert not os.path.lexists(path) and not os.path.lexists(path + ".lock"), \
            f"{path} or its lock left behind"
        assert_nothing_left(pr)


def test_command_may_follow_token_options_without_double_dash(pr_card):
    """-s, -c and --passphrase-file take one value each, as in
    `preloadrun -s mycard myapp`: the first other word is COMMAND."""
    pr = pr_card
    out = pr.fresh("out")
    r = pr.run("-s", "c1", "--passphrase-file", pr.card_pass, "-f", pr.tokens_file(),
               "sh", "-c", f'echo "$NFAST_NFKM_TOKENSFILE $1" > {out}', "sh", "arg")
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        assert f.read() == f"{pr.tokens_file()} arg\n"
    assert_nothing_left(pr)


def test_missing_tokens_file_directory_says_what_to_do(pr):
    missing = pr.path("missing")
    r = pr.run("-f", os.path.join(missing, "tokens.json"), "--", "true")
    assert_one_error_line(r, missing, "does not exist", "mkdir")
    assert not os.path.lexists(missing)
    assert_nothing_left(pr)


@pytest.mark.parametrize("args,needle", [
    (["--no-such-option", "--", "true"], "--no-such-option"),
    (["--passphrase-fd", "3", "--", "true"], "token"),
    (["--passphrase-file", "/dev/null", "--", "true"], "token"),
    (["--attach", "/tmp/preloadrun-e2e-nonexistent.json"], "command"),
    (["--retry-window", "5x", "--", "true"], "retry-window"),
    (["--retry-window", "soon", "--", "true"], "retry-window"),
    (["--retry-window", "300", "--", "true"], "300s"),
    (["--log-level", "loud", "--", "true"], "log"),
    (["--attach", "/tmp/x.json", "-f", "/tmp/y.json", "--", "true"], "attach"),
    (["-s", "c", "--passphrase-fd", "-1", "--", "true"], "'-1' is not a descriptor number"),
    (["-s", "c", "--passphrase-fd", "x3", "--", "true"], "'x3' is not a descriptor number"),
    (["-s", "c", "--passphrase-file", "c=", "--", "true"], "no FILE"),
], ids=["unknown-option", "fd-without-token", "file-without-token", "attach-without-command",
        "retry-window-unit", "retry-window-text", "retry-window-no-unit", "log-level",
        "attach-with-f", "fd-negative", "fd-not-a-number", "file-token-without-file"])
def test_bad_usage(pr, args, needle):
    r = pr.run(*args)
    line = assert_one_error_line(r, needle)
    assert len(line) <= 160, f"a long-winded error line: {line!r}"
    assert_nothing_left(pr)


def test_passphrase_file_for_a_token_not_given_is_named(pr_card):
    # TOKEN=FILE names a token that is not loaded: that is the error, not a
    # missing file called "nocard=...".
    pr = pr_card
    r = pr.run("-s", "c1", "--passphrase-file", f"nocard={pr.card_pass}", "--", "true")
    line = assert_one_error_line(r, "'nocard'", "not one of the tokens")
    assert "no such file" not in line.lower()
    assert_nothing_left(pr)


# -- signals sent to preloadrun (not on a terminal) -----------------------------

@pytest.mark.parametrize("sig", FORWARDED)
def test_signal_reaches_the_child_exactly_once(pr, sig):
    signo = signal.Signals["SIG" + sig]
    ends = ["--until-signal", sig, "--grace-ms", "300"]
    harmless = sig in ("WINCH", "CONT")  # default action: none; the probe exits 0
    if harmless:
        ends += ["--exit", "0"]
    p, files = start_supervised(pr, "-q", until=ends)
    os.kill(p.pid, signo)
    status = finish(pr, p)
    assert status == (0 if harmless else 128 + signo), pr.stderr_of(p)
    got = read_counts(files["count"])
    assert {k: v for k, v in got.items() if v} == {"SIG" + sig: 1}, got
    assert_nothing_left(pr)


# -- what the child gets ---------------------------------------------------------

def test_child_state_environment_and_no_passphrase(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    env = pr.env
    env["CKNFAST_RELOAD_KEYS"] = "0"   # overridden
    p, files = start_supervised(pr, *card_args(pr), "-f", tok)
    r = read_report(files["report"])
    assert r["sigblk"] == "0000000000000000", r
    assert r["sigign"] == "0000000000000000", r
    assert r["fds"] == "0,1,2", r
    assert int(r["ppid"]) == p.pid
    assert r["pgid"] == r["pid"], "the child runs in its own process group"
    child_env = r["env"]
    assert child_env["NFAST_NFKM_TOKENSFILE"] == tok
    assert os.path.isabs(child_env["NFAST_NFKM_TOKENSFILE"])
    assert child_env["CKNFAST_RELOAD_KEYS"] == "1"
    assert child_env["CKNFAST_LOADSHARING"] == "1"
    assert pr.load(tok)["owner"]["pid"] == p.pid
    # The passphrase is nowhere: not in the child's environment, not in
    # preloadrun's command line or environment, not in the tokens file.
    for name, value in child_env.items():
        assert PASS1 not in value and PASS1 not in name, f"passphrase in the child's {name}"
    for what in ("cmdline", "environ"):
        with open(f"/proc/{p.pid}/{what}", "rb") as f:
            assert PASS1.encode() not in f.read(), f"passphrase in /proc/<preloadrun>/{what}"
    with open(tok) as f:
        assert PASS1 not in f.read()
    open(files["until"], "w").close()
    assert finish(pr, p) == 0, pr.stderr_of(p)
    assert_nothing_left(pr, tok)


def test_child_cwd_and_stdio_are_preloadrun_s(pr):
    report = pr.fresh("report")
    r = subprocess.run([pr.bin, "-q", "--", pr.probe, "--report", report, "--print-ready"],
                       env=pr.env, cwd=pr.xdg, capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("READY "), r.stdout  # the child writes on preloadrun's stdout
    assert read_report(report)["cwd"] == pr.xdg


def test_no_ha_unsets_inherited_reload_keys(pr_card):
    pr = pr_card
    env = pr.env
    env["CKNFAST_RELOAD_KEYS"] = "1"
    report = pr.fresh("report")
    out = pr.fresh("copy")
    r = pr.run(*card_args(pr), "--no-ha", "--", "sh", "-c",
               f'cp "$NFAST_NFKM_TOKENSFILE" {out} && exec "$0" --report {report}', pr.probe,
               env=env)
    assert r.returncode == 0, r.stderr
    child_env = read_report(report)["env"]
    assert "CKNFAST_RELOAD_KEYS" not in child_env, child_env
    assert child_env["CKNFAST_LOADSHARING"] == "1"
    with open(out) as f:
        assert json.load(f)["high_availability"] is False
    assert_nothing_left(pr)


# -- the tokens file --------------------------------------------------------------

def test_tokens_file_content_mode_and_check_from_the_child(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    copy, check_out, modes = pr.fresh("copy"), pr.fresh("check"), pr.fresh("modes")
    script = textwrap.dedent(f"""\
        "$0" check > {check_out} 2>&1; echo "rc=$?" >> {check_out}
        "$0" check "$NFAST_NFKM_TOKENSFILE" >> {check_out} 2>&1; echo "rc=$?" >> {check_out}
        cp "$NFAST_NFKM_TOKENSFILE" {copy}
        stat -c '%a %n' "$NFAST_NFKM_TOKENSFILE" "$(dirname "$NFAST_NFKM_TOKENSFILE")" \
            "$NFAST_NFKM_TOKENSFILE.lock" > {modes}
        echo "pid=$PPID" >> {modes}
        """)
    r = pr.run(*card_args(pr), "-f", tok, "--", "sh", "-c", script, pr.bin)
    assert r.returncode == 0, r.stderr
    with open(check_out) as f:
        out = f.read()
    assert out.count("rc=0") == 2, out
    with open(modes) as f:
        lines = f.read().split("\n")
    assert lines[0] == f"600 {tok}", lines
    assert lines[1] == f"700 {pr.tokdir}", lines
    assert lines[2] == f"600 {tok}.lock", lines
    owner_pid = int(lines[3].split("=")[1])

    with open(copy) as f:
        data = json.load(f)
    assert data["format"] == "preloadrun-tokens"
    assert data["version"] == 2
    assert isinstance(data["generation"], int) and data["generation"] >= 1
    owner = data["owner"]
    assert owner["pid"] == owner_pid
    assert isinstance(owner["start_time"], int) and owner["start_time"] > 0
    assert owner["boot_id"] == boot_id()
    assert owner["hostname"] == socket.gethostname()
    assert HEX32.match(owner["instance"]), owner
    assert data["world"] == pr.sim.world_id
    assert HEX32.match(data["service_instance"]), data
    assert data["high_availability"] is True
    modules = pr.sim.modules()
    assert sorted(m["number"] for m in data["modules"]) == sorted(modules)
    for m in data["modules"]:
        assert m["esn"] == modules[m["number"]]["esn"]
        assert m["state"] == "usable"
        assert m["generation"] == modules[m["number"]]["generation"]
        assert m["reloads"] >= 1 and m["last_reload_ms"] > 0 and m["given_up"] is False
    cards = {c["name"]: c for c in pr.sim.json("softcard", "list")}
    assert len(data["tokens"]) == 1
    token = data["tokens"][0]
    assert (token["type"], token["name"]) == ("softcard", "c1")
    assert HEX40.match(token["hash"]) and token["hash"] == cards["c1"]["hash"]
    assert sorted(l["module"] for l in token["loaded"]) == sorted(modules), token
    for l in token["loaded"]:
        assert l["handle"] != 0
        assert l["esn"] == modules[l["module"]]["esn"]
        assert l["module_generation"] == modules[l["module"]]["generation"]
    # Clean exit: file and lock removed, tokens unloaded.
    assert_nothing_left(pr, tok)


def test_default_tokens_file_under_xdg_runtime_dir(pr):
    out = pr.fresh("out")
    r = pr.run("-q", "--", "sh", "-c",
               f'echo "$NFAST_NFKM_TOKENSFILE" > {out}; '
               f'stat -c %a "$(dirname "$NFAST_NFKM_TOKENSFILE")" "$NFAST_NFKM_TOKENSFILE" >> {out}')
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        path, dmode, fmode = f.read().split()
    assert re.fullmatch(re.escape(pr.xdg) + r"/preloadrun/tokens-[0-9a-f]{32}\.json", path), path
    assert (dmode, fmode) == ("700", "600")
    assert_nothing_left(pr, path)


def test_default_tokens_file_without_xdg_runtime_dir(pr):
    # Under $HOME/.preloadrun: a directory no other user can create first
    # (as they could /tmp/preloadrun-UID).
    env = pr.env
    del env["XDG_RUNTIME_DIR"]
    env["HOME"] = os.path.join(pr.root, "home")
    os.mkdir(env["HOME"], 0o700)
    out = pr.fresh("out")
    r = pr.run("-q", "--", "sh", "-c",
               f'echo "$NFAST_NFKM_TOKENSFILE" > {out}; '
               f'stat -c %a "$(dirname "$NFAST_NFKM_TOKENSFILE")" >> {out}', env=env)
    assert r.returncode == 0, r.stderr
    with open(out) as f:
        path, dmode = f.read().split()
    assert path.startswith(env["HOME"] + "/.preloadrun/tokens-"), path
    assert dmode == "700"
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")


def test_group_option_gives_mode_0640(pr):
    tok = pr.tokens_file()
    try:
        group = grp.getgrnam("nogroup")
    except KeyError:
        group = grp.getgrgid(os.getgid())
    p, files = start_supervised(pr, "-q", "--group", group.gr_name, "-f", tok)
    st = os.stat(tok)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_gid == group.gr_gid
    end_probe(files)
    assert finish(pr, p) == 0
    assert_nothing_left(pr, tok)


def test_group_unknown_is_one_error_line_and_nothing_left(pr):
    tok = pr.tokens_file()
    r = pr.run("-q", "--group", "no-such-group-preloadrun", "-f", tok, "--", "true")
    assert_one_error_line(r, "--group: no group named 'no-such-group-preloadrun'")
    assert_nothing_left(pr, tok)


def can_unshare_mounts():
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0


def statically_linked(path):
    """No program interpreter (PT_INTERP): the static PIE of a default build."""
    with open(path, "rb") as f:
        return b"/ld-linux" not in f.read(4096)


@pytest.mark.skipif(not can_unshare_mounts(), reason="needs a mount namespace (root)")
def test_group_and_service_user_from_a_source_other_than_the_files(pr):
    """Groups and users that only another NSS source knows (LDAP, sssd,
    systemd's dynamic users) are found by the static preloadrun, which asks
    getent(1): in a mount namespace, nsswitch.conf asks "ldap" first and
    getent is a script that plays that source. (A sanitizer build links
    glibc's NSS in, which no script can stand in for.)"""
    if not statically_linked(pr.bin):
        pytest.skip("preloadrun is dynamically linked: glibc's NSS answers in the process")
    tok = pr.tokens_file()
    nss = pr.fresh("nsswitch")
    with open(nss, "w") as f:
        f.write("passwd: ldap files\ngroup: ldap files\n")
    getent = pr.fresh("getent")
    with open(getent, "w") as f:
        f.write("#!/bin/sh\n"
                "case \"$1 $3\" in\n"
                "  'group ldapgroup'|'group 4321') echo 'ldapgroup:x:4321:' ;;\n"
                "  'passwd ldapsvc') echo 'ldapsvc:x:0:0::/:/bin/sh' ;;\n"
                "  *) exit 2 ;;\n"
                "esac\n")
    os.chmod(getent, 0o755)
    env = dict(pr.env, HSMSIM_SERVICE_USER="ldapsvc")
    script = (f'mount --bind {nss} /etc/nsswitch.conf && '
              f'mount --bind {getent} "$(readlink -f /usr/bin/getent)" && exec "$@"')
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", *pr.argv("-q", "--group", "ldapgroup", "-f", tok, "--",
                                       "stat", "-c", "%g %a", tok)],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "4321 640\n"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                        "sh", *pr.argv("-q", "--group", "otherldapgroup", "-f", tok, "--",
                                       "true")],
                       env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=TIMEOUT)
    assert_one_error_line(r, "--group: no group named 'otherldapgroup'")
    assert_nothing_left(pr, tok)


def test_check_refuses_a_tokens_file_others_may_write(pr):
    """As preloadrun refuses to publish where others may write, check (and
    the PKCS#11 module, through the same code) refuses such a file."""
    tok = pr.tokens_file()
    p, files = start_supervised(pr, "-q", "-f", tok)
    assert pr.check(tok).returncode == 0
    for mode, who in ((0o666, "others"), (0o620, "its group")):
        os.chmod(tok, mode)
        r = pr.check(tok)
        assert r.returncode == 1, r
        assert r.stderr.startswith(f"preloadrun: {tok}: not live: unsafe: "), r.stderr
        assert f"writable by {who}" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    os.chmod(tok, 0o600)
    os.chmod(pr.tokdir, 0o777)
    r = pr.check(tok)
    assert r.returncode == 1 and "unsafe" in r.stderr and "directory" in r.stderr, r
    os.chmod(pr.tokdir, 0o700)
    assert pr.check(tok).returncode == 0
    end_probe(files)
    assert finish(pr, p) == 0
    assert_nothing_left(pr, tok)


def test_check_reports_missing_and_corrupt(pr):
    missing = pr.tokens_file("missing.json")
    r = pr.check(missing)
    assert r.returncode == 1 and "missing" in r.stderr, r
    corrupt = pr.tokens_file("corrupt.json")
    with open(corrupt, "w") as f:
        f.write('{"format": "preloadrun-tok')
    r = pr.check(corrupt)
    assert r.returncode == 1 and "corrupt" in r.stderr, r
    os.unlink(corrupt)


@pytest.mark.parametrize("args", [["check", "a", "b"], ["check", "--bogus", "a"],
                                  ["status", "a", "b"], ["status", "--bogus", "a"]],
                         ids=["check-two-files", "check-unknown-option", "status-two-files",
                              "status-unknown-option"])
def test_check_and_status_usage_errors_exit_2(pr, args):
    r = pr.run(*args)
    assert r.returncode == 2, r


def test_check_uses_the_environment_and_needs_a_file(pr):
    tok = pr.tokens_file()
    p, files = start_supervised(pr, "-q", "-f", tok)
    env = pr.env
    env["NFAST_NFKM_TOKENSFILE"] = tok
    r = pr.check(env=env)
    assert r.returncode == 0, r.stderr
    assert tok in r.stdout and r.stderr == ""
    r = pr.check()  # neither FILE nor NFAST_NFKM_TOKENSFILE
    assert r.returncode == 2, r
    end_probe(files)
    assert finish(pr, p) == 0
    assert_nothing_left(pr, tok)


# -- kill -9: a stale file, refused by --attach, taken over by the next run -----

def test_stale_file_after_kill_9_is_reported_refused_and_taken_over(pr_card):
    pr = pr_card
    tok = pr.tokens_file()
    p, _ = start_supervised(pr, *card_args(pr), "-f", tok)
    pr.pids.append(the_child(pr, p))     # the orphaned child: killed at the end
    old = pr.load(tok)
    p.kill()
    p.wait()
    assert os.path.exists(tok) and os.path.exists(tok + ".lock")

    r = pr.check(tok)
    assert r.returncode == 1, r
    assert "dead" in r.stderr and r.stdout == "", r
    r = pr.run("status", tok, "--json")
    assert r.returncode == 1, r
    st = json.loads(r.stdout)
    assert st["live"] is False and st["path"] == tok and "dead" in st["status"], st
    assert st["file"]["owner"]["pid"] == p.pid

    r = pr.run("--attach", tok, "--", "true")
    assert_one_error_line(r, "dead")

    # A new preloadrun on the same path takes it over, says so, continues
    # the generation; a second one on the now live path is refused.
    q, files = start_supervised(pr, *card_args(pr), "-f", tok)
    wait_for(lambda: "taking over stale tokens file" in pr.stderr_of(q), timeout=5,
             what="the takeover log line")
    new = pr.load(tok)
    assert new["owner"]["pid"] == q.pid
    assert new["generation"] > old["generation"], (old["generation"], new["generation"])
    assert pr.check(tok).returncode == 0
    r = pr.run("-q", "-f", tok, "--", "true")
    assert_one_error_line(r, str(q.pid))
    r = pr.run("--attach", tok, "--", "sh", "-c", 'test "$NFAST_NFKM_TOKENSFILE" = "$0"', tok)
    assert r.returncode == 0, r.stderr
    end_probe(files)
    assert finish(pr, q) == 0
    assert not os.path.exists(tok) and not os.path.exists(tok + ".lock")


# -- atomic rewrites -------------------------------------------------------------

READER = textwrap.dedent("""\
    import json, os, sys
    path, stop = sys.argv[1], sys.argv[2]
    reads = bad = 0
    gens = set()
    errors = []
    while not os.path.exists(stop):
        try:
            with open(path) as f:
                text = f.read()
            data = json.loads(text)
            assert data["format"] == "preloadrun-tokens", data.get("format")
            gens.add(data["generation"])
        except Exception as e:
            bad += 1
            if len(errors) < 5:
                errors.append(repr(e))
        reads += 1
    print(json.dumps({"reads": reads, "bad": bad, "errors": errors,
                      "generations": len(gens), "max": max(gens, default=0)}))
    """)


def test_reader_never_sees_a_partial_file_while_it_is_rewritten(make_service, preloadrun_bin,
                                                                probe_bin):
    from preloadrun_support import Runner
    sim = make_service(modules=3, init_delay_ms=5)
    pr = Runner(preloadrun_bin, probe_bin, sim)
    try:
        pr.softcard("c1", PASS1)
        tok = pr.tokens_file()
        # the probe outlives the loop's 60 s deadline (slow under sanitizers)
        p, files = start_supervised(pr, "-q", "-s", "c1", "--passphrase-file",
                                    pr.sim.passfile(PASS1), "-f", tok, sleep_ms=240000)
        first = pr.load(tok)["generation"]
        stop = pr.fresh("stop")
        reader = subprocess.Popen([PY, "-c", READER, tok, stop], stdout=subprocess.PIPE,
                                  text=True)
        deadline = time.monotonic() + 60
        n = 0
        while pr.load(tok)["generation"] < first + 120 and time.monotonic() < deadline:
            sim.ok("module", "clear", 1 + n % 3)
            n += 1
            time.sleep(0.01)
        # Settle: every module usable again, the token back on each.
        wait_for(lambda: all(len(t["loaded"]) == 3 for t in pr.load(tok)["tokens"]),
                 timeout=10, what="the token reloaded on all 3 modules")
        open(stop, "w").close()
        out, _ = reader.communicate(timeout=10)
        got = json.loads(out)
        last = pr.load(tok)["generation"]
        print(f"{n} clears, {last - first} rewrites, reader: {got}")
        assert got["bad"] == 0, got
        assert last - first >= 100, f"only {last - first} rewrites for {n} clears"
        assert got["reads"] >= 100 and got["generations"] >= 20, got
        assert pr.check(tok).returncode == 0
        open(files["until"], "w").close()
        assert finish(pr, p) == 0, pr.stderr_of(p)
        assert_nothing_left(pr, tok)
    finally:
        pr.cleanup()


# -- reaping orphans ---------------------------------------------------------------

def test_subreaper_reaps_100_orphans(pr):
    spawned, stop = pr.fresh("spawned"), pr.fresh("stop")
    # 100 orphans (their parent subshell exits at once): they are reparented to
    # preloadrun, live 1.5 s, exit; preloadrun must reap them while its child
    # (this sh, polling for `stop`) still runs.
    script = (f'i=0; while [ $i -lt 100 ]; do (sleep 1.5 &); i=$((i+1)); done; '
              f': > {spawned}; n=0; '
              f'while [ ! -e {stop} ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done')
    p = pr.start("-q", "--subreaper", "--", "sh", "-c", script, stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(spawned), what="the orphans")
    adopted = [pid for pid, _ in children_of(p.pid)]
    assert len(adopted) >= 50, f"orphans not reparented to preloadrun: {adopted}"
    print(f"{len(adopted)} children of preloadrun after the orphans were made")

    def reaped():
        kids = children_of(p.pid)
        return len(kids) == 1 and kids[0][1] != "Z"
    try:
        wait_for(reaped, timeout=8.0, what="the orphans to be reaped")
    except AssertionError:
        kids = children_of(p.pid)
        zombies = [k for k in kids if k[1] == "Z"]
        pytest.fail(f"{len(zombies)} zombie children of preloadrun {p.pid} "
                    f"({len(kids)} children): {zombies[:10]}")
    assert p.poll() is None, "preloadrun ended before its child"
    open(stop, "w").close()
    assert finish(pr, p) == 0, pr.stderr_of(p)


def test_orphans_of_a_child_that_exits_are_reaped_with_subreaper(pr):
    # The probe makes 100 orphans that exit when it exits: preloadrun (their
    # new parent) still ends at once with the probe's own status.
    r = pr.run("-q", "--subreaper", "--", pr.probe, "--orphans", "100", "--exit", "3")
    assert r.returncode == 3, r.stderr
    assert_nothing_left(pr)


# -- service mode ------------------------------------------------------------------

def _start_service_mode(pr, *args, env=None):
    p = pr.start(*args, env=env)
    lines = []
    while True:
        line = p.stdout.readline().decode()
        assert line, f"preloadrun printed {lines!r} and closed stdout; {pr.stderr_of(p)}"
        lines.append(line)
        if line.startswith("echo preloadrun pid"):
            return p, "".join(lines)


@pytest.mark.parametrize("stop", ["TERM", "INT"])
def test_service_mode(pr_card, stop):
    pr = pr_card
    tok = pr.tokens_file()
    notify_path = pr.path("n.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(TIMEOUT)
    env = pr.env
    env["NOTIFY_SOCKET"] = notify_path
    env["CKNFAST_RELOAD_KEYS"] = "0"
    p, text = _start_service_mode(pr, *card_args(pr), "-f", tok, env=env)
    try:
        assert text.endswith(f"echo preloadrun pid {p.pid};\n"), text
        assert "NFAST_NFKM_TOKENSFILE=" in text and "; export NFAST_NFKM_TOKENSFILE;" in text
        assert PASS1 not in text
        # READY=1 once the file is published.
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg.split("\n"), msg
        assert os.path.exists(tok)
        # stdout is /dev/null from now on.
        assert os.readlink(f"/proc/{p.pid}/fd/1") == "/dev/null"

        # The lines eval'd by sh point another shell at the live file.
        sh_env = pr.env
        sh_env["PR"] = pr.bin
        r = subprocess.run(["sh", "-c", text + 'echo "F=$NFAST_NFKM_TOKENSFILE"; '
                            'echo "R=$CKNFAST_RELOAD_KEYS L=$CKNFAST_LOADSHARING"; '
                            '"$PR" check; echo "rc=$?"'],
                           env=sh_env, capture_output=True, text=True, timeout=TIMEOUT)
        assert r.returncode == 0, r
        assert f"preloadrun pid {p.pid}\n" in r.stdout
        assert f"F={tok}\n" in r.stdout
        assert "R=1 L=1\n" in r.stdout
        assert "rc=0" in r.stdout, r

        # status --json and status.
        r = pr.run("status", tok, "--json")
        assert r.returncode == 0, r
        st = json.loads(r.stdout)
        assert st["path"] == tok and st["status"] == "live" and st["live"] is True
        assert isinstance(st["reason"], str)
        assert st["file"]["owner"]["pid"] == p.pid
        assert st["file"]["tokens"][0]["name"] == "c1"
        r = pr.run("status", tok)
        assert r.returncode == 0, r
        for m in st["file"]["modules"]:
            assert m["esn"] in r.stdout, r.stdout
        assert "c1" in r.stdout and "handle" in r.stdout, r.stdout
        for l in st["file"]["tokens"][0]["loaded"]:
            assert f"module {l['module']} handle {l['handle']}" in r.stdout, r.stdout
        env2 = pr.env
        env2["NFAST_NFKM_TOKENSFILE"] = tok
        assert pr.run("status", env=env2).returncode == 0

        p.send_signal(signal.Signals["SIG" + stop])
        assert finish(pr, p) == 0, pr.stderr_of(p)
        assert_nothing_left(pr, tok)
    finally:
        notify.close()


def test_service_mode_no_ha_unsets_reload_keys(pr):
    p, text = _start_service_mode(pr, "-q", "--no-ha", "-f", pr.tokens_file())
    assert "unset CKNFAST_RELOAD_KEYS" in text or "CKNFAST_RELOAD_KEYS" not in text, text
    r = subprocess.run(["sh", "-c", 'CKNFAST_RELOAD_KEYS=1; export CKNFAST_RELOAD_KEYS; '
                        + text + 'echo "R=${CKNFAST_RELOAD_KEYS-unset}"'],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert "R=unset" in r.stdout, r
    p.send_signal(signal.SIGTERM)
    assert finish(pr, p) == 0
    assert_nothing_left(pr)


def test_bare_preloadrun_says_on_stderr_that_nothing_was_loaded(pr_card):
    # No COMMAND and no token: service mode all the same (module-protected
    # keys), with the shell lines alone on stdout and the note on stderr.
    pr = pr_card
    p, text = _start_service_mode(pr)
    note = "no token given (-s or -c): nothing was loaded"
    try:
        assert text.endswith(f"echo preloadrun pid {p.pid};\n"), text
        assert "NFAST_NFKM_TOKENSFILE=" in text and note not in text, text
        lines = [l for l in pr.stderr_of(p).splitlines() if note in l]
        assert len(lines) == 1, pr.stderr_of(p)
        assert lines[0] == (f"preloadrun[{p.pid}]: warning: {note}; the tokens file serves "
                            "module-protected keys only (reloaded onto HSMs that are cleared "
                            "or join), until SIGTERM or SIGINT (Ctrl-C)"), lines
    finally:
        p.send_signal(signal.SIGINT)
    assert finish(pr, p) == 0, pr.stderr_of(p)
    assert_nothing_left(pr)
    # Not with a token, nor with a COMMAND.
    p, text = _start_service_mode(pr, *card_args(pr), "-f", pr.tokens_file())
    p.send_signal(signal.SIGTERM)
    assert finish(pr, p) == 0
    assert note not in pr.stderr_of(p)
    r = pr.run("--", "true")
    assert r.returncode == 0 and note not in r.stderr, r.stderr


# -- passphrases -------------------------------------------------------------------

def _two_cards(pr):
    pr.softcard("a", PASS1)
    pr.softcard("b", PASS2)


def _loaded_tokens(pr, *args, pass_fds=()):
    """Runs preloadrun ARGS -- (copy the tokens file; probe --report); returns
    (result, tokens file data, child report)."""
    copy, report = pr.fresh("copy"), pr.fresh("report")
    r = pr.run(*args, "--", "sh", "-c",
               f'cp "$NFAST_NFKM_TOKENSFILE" {copy} && exec "$0" --report {report}', pr.probe,
               pass_fds=pass_fds)
    data = rep = None
    if r.returncode == 0:
        with open(copy) as f:
            data = json.load(f)
        rep = read_report(report)
    return r, data, rep


def test_passphrase_fd_one_line_per_token(pr):
    _two_cards(pr)
    rd, wr = os.pipe()
    os.write(wr, f"{PASS1}\n{PASS2}\n".encode())
    os.close(wr)
    try:
        r, data, rep = _loaded_tokens(pr, "-s", "a", "-s", "b", "--passphrase-fd", rd,
                                      pass_fds=(rd,))
    finally:
        os.close(rd)
    assert r.returncode == 0, r.stderr
    assert sorted(t["name"] for t in data["tokens"]) == ["a", "b"]
    for t in data["tokens"]:
        assert len(t["loaded"]) == 2, t
    assert rep["fds"] == "0,1,2", "the passphrase descriptor leaked into the child"
    assert_nothing_left(pr)


def test_passphrase_fd_in_the_wrong_order_is_a_wrong_passphrase(pr):
    _two_cards(pr)
    rd, wr = os.pipe()
    os.write(wr, f"{PASS2}\n{PASS1}\n".encode())
    os.close(wr)
    try:
        r = pr.run("-s", "a", "-s", "b", "--passphrase-fd", rd, "--", "true", pass_fds=(rd,))
    finally:
        os.close(rd)
    assert_one_error_line(r, "passphrase")
    assert_nothing_left(pr)


def test_passphrase_file_per_token(pr):
    _two_cards(pr)
    f1 = pr.sim.passfile(PASS1 + "\n")   # one trailing newline is removed
    f2 = pr.sim.passfile(PASS2)
    r, data, _ = _loaded_tokens(pr, "-s", "a", "-s", "b", "--passphrase-file", f"a={f1}",
                                "--passphrase-file", f"b={f2}")
    assert r.returncode == 0, r.stderr
    assert sorted(t["name"] for t in data["tokens"]) == ["a", "b"]
    assert all(len(t["loaded"]) == 2 for t in data["tokens"])
    assert_nothing_left(pr)


def test_passphrase_file_through_a_symlink_and_one_others_may_read(pr_card):
    """Secrets mounted as symbolic links (Kubernetes, systemd credentials)
    are followed; the file reached is checked: one others may read is used
    with a warning, one others may write is refused."""
    pr = pr_card
    target = pr.sim.passfile(PASS1 + "\r\n")   # a line ending from Windows
    link = pr.path("pass-link")
    os.symlink(target, link)
    r = pr.run("-s", "c1", "--passphrase-file", link, "--", "true")
    assert r.returncode == 0, r.stderr
    assert "readable by others" not in r.stderr, r.stderr
    os.chmod(target, 0o644)
    r = pr.run("-s", "c1", "--passphrase-file", link, "--", "true")
    assert r.returncode == 0, r.stderr
    warnings = [l for l in r.stderr.splitlines() if "readable by others" in l]
    assert len(warnings) == 1 and re.match(r"preloadrun\[\d+\]: warning: ", warnings[0]), r.stderr
    assert link in warnings[0] and "0644" in warnings[0], warnings
    assert PASS1 not in r.stderr
    os.chmod(target, 0o646)
    r = pr.run("-s", "c1", "--passphrase-file", link, "--", "true")
    assert_one_error_line(r, link, "writable by group or others")
    assert_nothing_left(pr)


def test_passphrase_prompt_on_the_terminal_without_echo(pr_card):
    pr = pr_card
    copy = pr.fresh("copy")
    log_path = pr.fresh("pty")
    child = pexpect.spawn(pr.bin, ["-s", "c1", "--", "sh", "-c",
                                   f'cp "$NFAST_NFKM_TOKENSFILE" {copy}; echo CHILD-DONE'],
                          env=pr.env, cwd=pr.root, encoding="utf-8", timeout=TIMEOUT)
    with open(log_path, "w") as log:
        child.logfile_read = log
        try:
            child.expect("(?i)passphrase")
            # Wait for the prompt to finish (echo off before we type).
            time.sleep(0.2)
            child.sendline(PASS1)
            child.expect("CHILD-DONE")
            child.expect(pexpect.EOF)
        finally:
            child.close()
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    with open(log_path) as f:
        output = f.read()
    assert PASS1 not in output, f"the passphrase was echoed: {output!r}"
    with open(copy) as f:
        assert json.load(f)["tokens"][0]["name"] == "c1"
    assert_nothing_left(pr)
