"""The man pages and the completions keep up with --help.

For preloadrun (and its subcommands check and status) and hsmfleet and its
alias hsmsim (and each
of its subcommands, at every level), the built binary's --help is the
reference. Every option it shows (long and short) and every subcommand it
lists must be:
- in the man page source, man/PROGRAM.1.scd (hsmfleet.1.scd for both), in
  bold (*--json*);
- in each of the program's three completion files;
- offered by each shell: completing "PROGRAM SUBCOMMAND... -" offers every
  option of that level, and "PROGRAM SUBCOMMAND... " every subcommand.
The other way around, a completion offers no option that --help does not
show at that level (hsmsim takes its global options at every level).
"""

import functools
import os
import re
import subprocess

import pytest

import shells
from conftest import executable

PROGRAMS = ("preloadrun", "hsmsim", "hsmfleet")
# hsmsim is hsmfleet under another name: one man page, one set of completion
# files (hsmfleet.fish only points fish at hsmsim's), both names completed.
MAN_PAGE = {"preloadrun": "preloadrun", "hsmsim": "hsmfleet", "hsmfleet": "hsmfleet"}
COMPLETIONS = {"preloadrun": "preloadrun", "hsmsim": "hsmsim", "hsmfleet": "hsmsim"}
# A row of the Options: section: "  -s,--softcard NAME|HASH ..." or
# "  --no-ha   description".
OPTION_ROW = re.compile(r"^  (-[A-Za-z0-9](?=[,\s]|$)|--[A-Za-z0-9][\w-]*)((?:,-[\w-]+)*)")
# A row of the Subcommands: section: "  clear    description".
SUBCOMMAND_ROW = re.compile(r"^  ([a-z][\w-]*)(?:\s|$)")


def source_dir():
    path = os.environ.get("PRELOADRUN_SOURCE_DIR")
    if not path:
        pytest.fail("PRELOADRUN_SOURCE_DIR is not set: run these tests through ctest")
    return path


@functools.lru_cache(maxsize=None)
def help_of(program, path):
    """(options, subcommands) that `PROGRAM PATH... --help` shows."""
    binary = executable(program.upper())
    proc = subprocess.run([binary, *path, "--help"], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert proc.returncode == 0, f"{program} {' '.join(path)} --help: {proc.stderr}"
    options, subcommands, section = [], [], None
    for line in proc.stdout.splitlines():
        if re.match(r"^\S.*:$", line):
            section = line[:-1]
        elif not line.strip():
            section = None
        elif section == "Options" and (m := OPTION_ROW.match(line)):
            options.append(m.group(1))
            options.extend(o for o in m.group(2).split(",") if o)
        elif section == "Subcommands" and (m := SUBCOMMAND_ROW.match(line)):
            subcommands.append(m.group(1))
    assert options, f"no option found in {program} {' '.join(path)} --help:\n{proc.stdout}"
    return tuple(options), tuple(subcommands)


def levels(program):
    """Every subcommand path of `program`, from its --help: (), ("module",),
    ("module", "clear"), ..."""
    found, todo = [], [()]
    while todo:
        path = todo.pop(0)
        found.append(path)
        todo.extend(path + (sub,) for sub in help_of(program, path)[1])
    return found


ALL_LEVELS = [(program, path) for program in PROGRAMS for path in levels(program)]
LEVEL_IDS = [" ".join((program,) + path) for program, path in ALL_LEVELS]


def test_every_level_is_found():
    # The walk above really goes down the subcommands.
    assert ("preloadrun", ("status",)) in ALL_LEVELS
    assert ("hsmsim", ("module", "fail-next")) in ALL_LEVELS
    assert ("hsmfleet", ("module", "drain")) in ALL_LEVELS
    assert "--json" in help_of("hsmsim", ("key", "list"))[0]
    assert "-s" in help_of("preloadrun", ())[0]


def man_sections(program):
    """{section title: text} of man/PROGRAM.1.scd."""
    with open(os.path.join(source_dir(), "man", f"{MAN_PAGE[program]}.1.scd")) as f:
        parts = re.split(r"^# (.+)$", f.read(), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def defined(text, word):
    """`word` in bold on a definition line: one that starts (after an
    optional tab) with a bold term, such as "*-s*, *--softcard* _NAME_"."""
    return any(line.lstrip("\t").startswith("*") and f"*{word}*" in line
               for line in text.splitlines())


@pytest.mark.parametrize("program,path", ALL_LEVELS, ids=LEVEL_IDS)
def test_man_page_documents_help(program, path):
    """Where a reader looks: preloadrun's options in OPTIONS and its
    subcommands (with their options) in SUBCOMMANDS; hsmsim's global options
    in GLOBAL OPTIONS, each command a definition in COMMANDS ("*module
    clear* _N_", "*softcard list*, *cardset list*") with its options there."""
    sections = man_sections(program)
    options, subcommands = help_of(program, path)
    own = [o for o in options if o not in ("-h", "--help")] if path else list(options)
    if program == "preloadrun":
        where = sections["SUBCOMMANDS"] if path else sections["OPTIONS"]
        missing = [o for o in own if f"*{o}*" not in where]
        missing += [s for s in subcommands if not defined(sections["SUBCOMMANDS"], s)]
    elif not path:
        missing = [o for o in own if not defined(sections["GLOBAL OPTIONS"], o)]
    else:
        commands = sections["COMMANDS"]
        missing = [o for o in own if f"*{o}*" not in commands]
        name = " ".join(path)
        if not subcommands and not defined(commands, name):
            missing.append(name)
    assert not missing, f"man/{MAN_PAGE[program]}.1.scd does not document {missing} where expected " \
                        f"(from {program} {' '.join(path)} --help)"


def _mentions(text, word, fish):
    if fish and word.startswith("--"):
        return re.search(rf"(?<![\w-])-l {re.escape(word[2:])}(?![\w-])", text)
    if fish and word.startswith("-"):
        return re.search(rf"(?<![\w-])-s {re.escape(word[1:])}(?![\w-])", text)
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text)


@pytest.mark.parametrize("program,path", ALL_LEVELS, ids=LEVEL_IDS)
def test_completion_files_mention_help(program, path):
    options, subcommands = help_of(program, path)
    files = COMPLETIONS[program]
    for name in (f"{files}.bash", f"_{files}", f"{files}.fish"):
        with open(os.path.join(source_dir(), "completions", name)) as f:
            text = f.read()
        missing = [word for word in options + subcommands
                   if not _mentions(text, word, name.endswith(".fish"))]
        assert not missing, f"completions/{name} lacks {missing} " \
                            f"(from {program} {' '.join(path)} --help)"


@pytest.fixture
def complete(shell, home, workdir):
    bin_dirs = [os.path.dirname(executable("PRELOADRUN")), os.path.dirname(executable("HSMSIM"))]
    env = shells.shell_env(home, bin_dirs, HSMSIM_SOCKET=os.path.join(workdir, "none.sock"))

    def run(line):
        result = shells.complete(shell, line, env, workdir)
        assert result.errors == "", f"{shell} printed errors completing {line!r}:\n{result.errors}"
        return set(result.candidates)

    return run


@pytest.mark.parametrize("program", PROGRAMS)
def test_shells_offer_what_help_shows(program, complete):
    global_options = set(help_of(program, ())[0]) if program != "preloadrun" else set()
    problems = []
    for path in levels(program):
        options, subcommands = help_of(program, path)
        line = " ".join((program,) + path)
        offered = complete(line + " -")
        if missing := set(options) - offered:
            problems.append(f"{line} -: {sorted(missing)} not offered")
        if unknown := offered - set(options) - global_options:
            problems.append(f"{line} -: offers {sorted(unknown)}, not in --help")
        if subcommands:
            offered = complete(line + " ")
            if missing := set(subcommands) - offered:
                problems.append(f"{line} <TAB>: subcommands {sorted(missing)} not offered")
    assert not problems, "\n".join(problems)
