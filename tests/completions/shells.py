"""Complete a command line in a real shell and collect the candidates.

complete(shell, line, env, cwd) runs the shell on the completion files of the
source tree (completions/ under $PRELOADRUN_SOURCE_DIR) as an installed copy
would be found, with the cursor at the end of `line`, and returns a
Completion: the candidates, what the shell printed on its error output
meanwhile, and how long the completion took.

- bash: bash-completion loaded, the file found by bash-completion's loader
  under the command's name (as installed without the .bash suffix); the
  completion function is called with COMP_WORDS/COMP_CWORD/COMP_LINE set as
  bash sets them (bash_complete.sh).
- zsh: an interactive `zsh -f` in a pseudo-terminal with compinit and
  completions/ first in $fpath; the line is typed, then TAB, and the matches
  that the completion adds are recorded (zsh_capture.zsh).
- fish: `complete -C LINE` with completions/ first in $fish_complete_path.

A missing shell or bash-completion is a test failure, not a skip: the
suite declares those packages (scripts/dev.sh deps).
"""

import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
SHELLS = ("bash", "zsh", "fish")
# Longest a completion may take, with a hung HSM service: the completions
# give it 2 s (timeout -k 1 2), plus room for a busy machine.
SHELL_TIMEOUT = 30.0


@dataclasses.dataclass
class Completion:
    candidates: list  # in the shell's order, duplicates removed
    errors: str       # the shell's error output during the completion
    seconds: float    # how long the completion itself took


def completions_dir():
    source = os.environ.get("PRELOADRUN_SOURCE_DIR")
    if not source:
        pytest.fail("PRELOADRUN_SOURCE_DIR is not set: run these tests through ctest")
    path = os.path.join(source, "completions")
    if not os.path.isdir(path):
        pytest.fail(f"no completions directory at {path}")
    return path


def require_shell(shell):
    """Fails the test, with what to install, when `shell` is missing."""
    if shutil.which(shell) is None:
        pytest.fail(f"{shell} is not installed: the completion tests need bash-completion, "
                    "zsh and fish (scripts/dev.sh deps installs them)")
    if shell == "bash" and not os.path.isfile(BASH_COMPLETION):
        pytest.fail(f"bash-completion is not installed ({BASH_COMPLETION} is missing): "
                    "scripts/dev.sh deps installs it")
    # pexpect drives zsh in a pseudo-terminal.
    if shell == "zsh" and importlib.util.find_spec("pexpect") is None:
        pytest.fail("python3-pexpect is not installed: scripts/dev.sh deps installs it")


def _unique(items):
    return list(dict.fromkeys(items))


# -- bash ----------------------------------------------------------------------

def bash_words(line):
    """COMP_WORDS for `line`, as bash splits it for completion: at blanks and
    around the word-break characters "=" and ":" (COMP_WORDBREAKS), plus an
    empty word under the cursor after a blank. No quoting in test lines."""
    words = re.findall(r"[=:]|[^\s=:]+", line)
    if not words or line[-1].isspace():
        words.append("")
    return words


def _complete_bash(line, env, cwd, scratch):
    # bash-completion looks in $BASH_COMPLETION_USER_DIR/completions first,
    # for a file named like the command.
    user_dir = os.path.join(scratch, "bash-completion")
    os.makedirs(os.path.join(user_dir, "completions"), exist_ok=True)
    # As installed: hsmfleet's file is hsmsim's.
    for name, source in (("preloadrun", "preloadrun"), ("hsmsim", "hsmsim"),
                         ("hsmfleet", "hsmsim")):
        link = os.path.join(user_dir, "completions", name)
        if not os.path.lexists(link):
            os.symlink(os.path.join(completions_dir(), source + ".bash"), link)
    env = dict(env, BASH_COMPLETION_USER_DIR=user_dir)
    proc = subprocess.run(
        ["bash", "--norc", "--noprofile", os.path.join(HERE, "bash_complete.sh"), line]
        + bash_words(line),
        env=env, cwd=cwd, capture_output=True, text=True, timeout=SHELL_TIMEOUT)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines or not lines[0].startswith("#elapsed "):
        pytest.fail(f"bash_complete.sh failed (status {proc.returncode}) on {line!r}:\n"
                    f"{proc.stdout}{proc.stderr}")
    return Completion(_unique(lines[1:]), proc.stderr, float(lines[0].split()[1]))


# -- zsh -----------------------------------------------------------------------

def _complete_zsh(line, env, cwd, scratch):
    import pexpect

    capture = os.path.join(scratch, "zsh-capture")
    errors = os.path.join(scratch, "zsh-errors")
    for path in (capture, errors):
        open(path, "w").close()
    env = dict(env, COMPLETIONS_DIR=completions_dir(), CAPTURE=capture, ERRORS=errors,
               TERM="vt100", ZDOTDIR=env["HOME"])
    child = pexpect.spawn("zsh", ["-f", "-i"], env=env, cwd=cwd, encoding="utf-8",
                          timeout=SHELL_TIMEOUT, dimensions=(50, 200))
    try:
        child.sendline(". " + os.path.join(HERE, "zsh_capture.zsh"))
        child.expect_exact("zsh-ready> ")
        child.send(line + "\t")
        deadline = time.monotonic() + SHELL_TIMEOUT
        while True:
            with open(capture) as f:
                recorded = f.read().splitlines()
            if "#done" in recorded:
                break
            if time.monotonic() > deadline or not child.isalive():
                pytest.fail(f"zsh did not finish completing {line!r}; terminal:\n"
                            f"{child.before}")
            time.sleep(0.02)
    finally:
        child.close(force=True)
    with open(errors) as f:
        error_text = f.read()
    elapsed = next(float(r.split()[1]) for r in recorded if r.startswith("#elapsed "))
    matches = [r for r in recorded if not r.startswith("#")]
    return Completion(_unique(matches), error_text, elapsed)


# -- fish ----------------------------------------------------------------------

# Times `complete -C` itself; prints "#elapsed SECONDS", then the candidates
# (fish prints "candidate<TAB>description").
FISH_SCRIPT = r"""
set -p fish_complete_path $COMPLETIONS_DIR
set -l start (date +%s%N)
set -l found (complete -C $COMPLETE_LINE)
set -l end (date +%s%N)
echo "#elapsed" (math "($end - $start) / 1000000000")
# (string split fails when no candidate has a description.)
string split -f 1 \t -- $found; or true
"""


def _complete_fish(line, env, cwd, scratch):
    env = dict(env, COMPLETIONS_DIR=completions_dir(), COMPLETE_LINE=line)
    proc = subprocess.run(["fish", "-c", FISH_SCRIPT], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=SHELL_TIMEOUT)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines or not lines[0].startswith("#elapsed "):
        pytest.fail(f"fish failed (status {proc.returncode}) on {line!r}:\n"
                    f"{proc.stdout}{proc.stderr}")
    return Completion(_unique(lines[1:]), proc.stderr, float(lines[0].split()[1]))


_RUNNERS = {"bash": _complete_bash, "zsh": _complete_zsh, "fish": _complete_fish}


def complete(shell, line, env, cwd):
    require_shell(shell)
    scratch = tempfile.mkdtemp(prefix="cpl-sh.")
    try:
        return _RUNNERS[shell](line, env, cwd, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


def system_path_without(root, names):
    """A directory standing for the system's PATH without the programs
    `names`: a link to every other program of SYSTEM_PATH (the first of a
    name wins, as on PATH). Whatever the host has installed (the package
    puts hsmsim in /usr/bin), a shell given this directory instead of
    SYSTEM_PATH does not find `names`."""
    os.makedirs(root, exist_ok=True)
    for directory in SYSTEM_PATH:
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            link = os.path.join(root, name)
            if name in names or os.path.lexists(link):
                continue
            os.symlink(os.path.join(directory, name), link)
    return root


def shell_env(home, path_dirs, system_path=SYSTEM_PATH, **extra):
    """A clean environment for a shell: its own HOME and XDG directories (no
    user configuration, history or cache), PATH = path_dirs + system_path,
    and `extra`. Variables set to None are left out."""
    env = {
        "HOME": home,
        "XDG_CONFIG_HOME": os.path.join(home, ".config"),
        "XDG_DATA_HOME": os.path.join(home, ".local", "share"),
        "XDG_CACHE_HOME": os.path.join(home, ".cache"),
        "PATH": ":".join(list(path_dirs) + list(system_path)),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "USER": os.environ.get("USER", "root"),
    }
    for key, value in extra.items():
        if value is not None:
            env[key] = value
    return env
