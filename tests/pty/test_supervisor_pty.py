"""Child supervision on a terminal: each terminal signal reaches the child
exactly once, job control (Ctrl-Z, fg, bg) works under an interactive shell,
and a window size change gives the child exactly one SIGWINCH.

The child is the probe: it counts the signals it receives into a file
(`--count`), prints "READY <pid>" once set up, and ends on a line from the
terminal (`--until-line`, which also proves it can read the terminal) or on a
given signal (`--until-signal`, then it dies of it after a grace period in
which a duplicate would be counted).
"""

import os
import shlex
import signal
import time

import pexpect
import pytest

from probe_files import read_counts, read_report
from procs import proc_stat, wait_for
from pty_shell import shell_fixture

TIMEOUT = 10
PROMPT = "PTYTEST> "


def state(pid):
    """The state letter of /proc/PID/stat ('T' stopped), or None when gone."""
    fields = proc_stat(pid)
    return fields[0] if fields else None


def default_dispositions():
    # Python ignores SIGPIPE and SIGXFSZ, and pexpect's fork keeps that: a
    # caller's ignored signals stay ignored for preloadrun's child. Start
    # from what a shell gives its commands.
    for signo in (signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(signo, signal.SIG_DFL)


def spawn_direct(argv, workdir):
    """COMMAND on a fresh pty, as the session leader in the foreground."""
    env = dict(os.environ, SUPERVISE_DRIVER_LOG="debug")
    child = pexpect.spawn(argv[0], argv[1:], cwd=workdir, env=env, encoding="utf-8",
                          timeout=TIMEOUT, dimensions=(24, 80),
                          preexec_fn=default_dispositions)
    child.logfile_read = open(os.path.join(workdir, "pty.log"), "w")
    return child


def finish(child):
    child.expect(pexpect.EOF)
    child.close()
    return child.exitstatus, child.signalstatus


@pytest.mark.parametrize("key,signo,status", [
    ("\x03", signal.SIGINT, 130),   # Ctrl-C
    ("\x1c", signal.SIGQUIT, 131),  # Ctrl-\
])
def test_terminal_signal_reaches_child_exactly_once(supervise, probe, workdir, key, signo,
                                                    status):
    count_file = os.path.join(workdir, "counts")
    name = signal.Signals(signo).name
    child = spawn_direct(supervise + [probe, "--count", count_file, "--print-ready",
                                      "--until-signal", name[3:], "--grace-ms", "300"],
                         workdir)
    child.expect(r"READY (\d+)")
    child.send(key)
    exitstatus, signalstatus = finish(child)
    assert (exitstatus, signalstatus) == (status, None)
    got = read_counts(count_file)
    assert got[name] == 1, got
    assert sum(got.values()) == 1, got


def test_child_has_the_terminal_and_gets_one_winch_per_resize(supervise, probe, workdir):
    count_file = os.path.join(workdir, "counts")
    report_file = os.path.join(workdir, "report")
    child = spawn_direct(supervise + [probe, "--report", report_file, "--count", count_file,
                                      "--print-ready", "--until-line"], workdir)
    child.expect(r"READY (\d+)")
    r = read_report(report_file)
    assert r["pgid"] == r["pid"]                      # its own process group...
    assert r["tty_fg"] == r["pgid"]                   # ...in the terminal's foreground
    assert r["sigblk"] == "0000000000000000"
    assert r["sigign"] == "0000000000000000"
    assert r["fds"] == "0,1,2"

    child.setwinsize(40, 100)
    wait_for(lambda: read_counts(count_file).get("SIGWINCH") == 1, what="SIGWINCH")
    time.sleep(0.3)  # a duplicate would arrive now
    child.setwinsize(50, 120)
    wait_for(lambda: read_counts(count_file).get("SIGWINCH") == 2, what="second SIGWINCH")
    time.sleep(0.3)
    child.sendline("bye")
    child.expect("GOT bye")
    assert finish(child) == (0, None)
    got = read_counts(count_file)
    assert got["SIGWINCH"] == 2, got
    assert sum(got.values()) == 2, got


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1])
def test_signal_sent_to_preloadrun_on_a_terminal_reaches_child_once(supervise, probe, workdir,
                                                                    signo):
    count_file = os.path.join(workdir, "counts")
    name = signal.Signals(signo).name
    child = spawn_direct(supervise + [probe, "--count", count_file, "--print-ready",
                                      "--until-signal", name[3:]], workdir)
    child.expect(r"READY (\d+)")
    os.kill(child.pid, signo)
    assert finish(child) == (128 + signo, None)
    got = read_counts(count_file)
    assert got[name] == 1, got
    assert sum(got.values()) == 1, got


# No echo of what is typed: only output is matched.
shell = shell_fixture(prompt=PROMPT, timeout=TIMEOUT, editing=False, echo=False,
                      env={"SUPERVISE_DRIVER_LOG": "debug"})


def start_job(shell, supervise, probe, workdir):
    count_file = os.path.join(workdir, "counts")
    report_file = os.path.join(workdir, "report")
    shell.run(shlex.join(supervise + [probe, "--report", report_file, "--count", count_file,
                                    "--print-ready", "--until-line"]))
    shell.p.expect(r"READY (\d+)")
    r = read_report(report_file)
    return int(r["ppid"]), int(r["pid"]), count_file  # supervisor, child


def test_ctrl_z_stops_the_job_and_fg_resumes_both(shell, supervise, probe, workdir):
    supervisor, child, count_file = start_job(shell, supervise, probe, workdir)

    shell.p.send("\x1a")  # Ctrl-Z: to the child's group (the foreground)
    shell.p.expect("Stopped")
    shell.prompt()
    wait_for(lambda: state(child) == "T" and state(supervisor) == "T", what="both stopped")

    shell.run("fg")
    wait_for(lambda: state(child) not in ("T", None) and state(supervisor) not in ("T", None),
             what="both running")
    shell.run("after-fg")           # read by the child: it has the terminal again
    shell.p.expect("GOT after-fg")
    shell.prompt()
    assert shell.status() == 0
    got = read_counts(count_file)
    assert got.get("SIGCONT") == 1, got  # one SIGCONT, from preloadrun on fg
    assert sum(got.values()) == 1, got
    shell.close()


def test_bg_continues_without_the_terminal_and_fg_gives_it_back(shell, supervise, probe,
                                                                 workdir):
    count_file = os.path.join(workdir, "counts")
    report_file = os.path.join(workdir, "report")
    read_now = os.path.join(workdir, "read-now")
    # The probe leaves the terminal alone until read_now exists.
    shell.run(shlex.join(supervise + [probe, "--report", report_file, "--count", count_file,
                                    "--print-ready", "--until-line", "--read-after", read_now]))
    shell.p.expect(r"READY (\d+)")
    r = read_report(report_file)
    supervisor, child = int(r["ppid"]), int(r["pid"])

    shell.p.send("\x1a")
    shell.p.expect("Stopped")
    shell.prompt()
    wait_for(lambda: state(child) == "T" and state(supervisor) == "T", what="both stopped")

    # bg: both continue in the background; the shell keeps the terminal.
    shell.run("bg")
    shell.prompt()
    wait_for(lambda: state(child) not in ("T", None) and state(supervisor) not in ("T", None),
             what="both running in the background")
    wait_for(lambda: read_counts(count_file).get("SIGCONT") == 1, what="SIGCONT on bg")
    assert shell.status() == 0  # the shell still reads the terminal

    # fg of a running job: bash gives preloadrun's group the terminal and
    # sends no signal. When the child reads, it gets SIGTTIN; preloadrun,
    # now in the foreground, passes the terminal on and continues it.
    shell.run("fg")
    shell.p.expect("--read-after")  # bash prints the job's command line
    open(read_now, "w").close()
    shell.run("after-bg-fg")
    shell.p.expect("GOT after-bg-fg")
    shell.prompt()
    assert shell.status() == 0
    got = read_counts(count_file)
    assert got.get("SIGCONT") == 2, got  # bg, then the handover
    assert sum(got.values()) == 2, got
    shell.close()


def test_sigtstp_sent_to_preloadrun_stops_the_job(shell, supervise, probe, workdir):
    supervisor, child, count_file = start_job(shell, supervise, probe, workdir)
    os.kill(supervisor, signal.SIGTSTP)
    shell.p.expect("Stopped")
    shell.prompt()
    wait_for(lambda: state(child) == "T" and state(supervisor) == "T", what="both stopped")
    shell.run("fg")
    shell.run("after-tstp")
    shell.p.expect("GOT after-tstp")
    shell.prompt()
    assert shell.status() == 0
    shell.close()


def test_ctrl_c_under_a_shell_ends_the_job_with_130(shell, supervise, probe, workdir):
    count_file = os.path.join(workdir, "counts")
    shell.run(shlex.join(supervise + [probe, "--count", count_file, "--print-ready",
                                    "--until-signal", "INT"]))
    shell.p.expect(r"READY (\d+)")
    shell.p.send("\x03")
    shell.prompt()
    assert shell.status() == 130
    assert read_counts(count_file).get("SIGINT") == 1
    shell.close()


def test_background_job_reading_the_terminal_stops_and_fg_resumes_it(shell, supervise, probe,
                                                                     workdir):
    count_file = os.path.join(workdir, "counts")
    report_file = os.path.join(workdir, "report")
    # Started in the background: the child reads the terminal at once,
    # gets SIGTTIN and stops; preloadrun stops too and the shell says so.
    shell.run(shlex.join(supervise + [probe, "--report", report_file, "--count", count_file,
                                    "--until-line", "--eager-read"]) + " &")
    shell.p.expect("Stopped")
    r = read_report(report_file)
    supervisor, child = int(r["ppid"]), int(r["pid"])
    assert r["tty_fg"] != r["pgid"]  # preloadrun was not in the foreground: no handover
    wait_for(lambda: state(child) == "T" and state(supervisor) == "T", what="both stopped")

    shell.run("fg")
    wait_for(lambda: state(child) not in ("T", None), what="child running")
    shell.run("typed-after-fg")
    shell.p.expect("GOT typed-after-fg")
    shell.prompt()
    assert shell.status() == 0
    assert read_counts(count_file).get("SIGCONT") == 1
    shell.close()
