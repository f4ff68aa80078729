"""What a person meets first: --help fits an 80-column terminal and shows
examples, --version says what was built, and a bad command line gets one line
naming what is wrong and where to look (exit 2 for hsmsim, 125 for
preloadrun)."""

import os
import re
import subprocess

import pytest

WIDTH = 80
PRELOADRUN = os.environ.get("PRELOADRUN", "")
HSMSIM = os.environ.get("HSMSIM", "")
HSMFLEET = os.environ.get("HSMFLEET", "")
PATHS = {"preloadrun": PRELOADRUN, "hsmsim": HSMSIM, "hsmfleet": HSMFLEET}

# Every command line of hsmsim that has its own --help.
HSMSIM_COMMANDS = [
    [], ["serve"], ["softcard"], ["softcard", "create"], ["softcard", "delete"],
    ["softcard", "list"], ["cardset"], ["cardset", "create"], ["cardset", "delete"],
    ["cardset", "list"], ["key"], ["key", "generate"], ["key", "delete"], ["key", "list"],
    ["module"], ["module", "list"], ["module", "clear"], ["module", "fail"],
    ["module", "restore"], ["module", "remove"], ["module", "add"],
    ["module", "latency"], ["module", "fail-next"],
]


def run(*argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSMSIM_")}
    env["HSMSIM_SOCKET"] = "/nonexistent/hsmsim.sock"
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=10, env=env,
                          stdin=subprocess.DEVNULL)


def assert_fits(text, what):
    long = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not long, f"{what}: lines wider than {WIDTH} columns: {long}"


@pytest.fixture(scope="module", autouse=True)
def binaries():
    for var, path in (("PRELOADRUN", PRELOADRUN), ("HSMSIM", HSMSIM), ("HSMFLEET", HSMFLEET)):
        if not path or not os.access(path, os.X_OK):
            pytest.fail(f"{var} must name the built program (run through ctest)")


@pytest.mark.parametrize("program", ["preloadrun", "hsmsim", "hsmfleet"])
def test_help_fits_a_terminal_and_shows_examples(program):
    path = PATHS[program]
    r = run(path, "--help")
    assert r.returncode == 0 and r.stderr == ""
    assert_fits(r.stdout, f"{program} --help")
    assert "\nExamples:\n" in r.stdout
    # Each example is a command line of the program itself, and exit
    # statuses are spelled out.
    examples = r.stdout.split("\nExamples:\n", 1)[1]
    assert len(re.findall(rf"^  {program} ", examples, re.M)) >= 4
    assert "Exit status:" in examples and f"{program}(1)" in examples
    # A flag shows no value placeholder; an option shows its value's name only.
    assert not re.search(r"--help \S", r.stdout)
    assert ":UINT" not in r.stdout and "NONNEGATIVE" not in r.stdout


def test_preloadrun_subcommand_help():
    for sub in ("check", "status"):
        r = run(PRELOADRUN, sub, "--help")
        assert r.returncode == 0, r.stderr
        assert_fits(r.stdout, f"preloadrun {sub} --help")
        assert f"preloadrun {sub}" in r.stdout and "FILE" in r.stdout
        assert "Examples:" not in r.stdout  # the main command's, not repeated


@pytest.mark.parametrize("command", HSMSIM_COMMANDS, ids=lambda c: " ".join(c) or "hsmsim")
def test_hsmsim_help_fits_every_subcommand(command):
    r = run(HSMSIM, *command, "--help")
    assert r.returncode == 0, r.stderr
    assert_fits(r.stdout, "hsmsim " + " ".join(command) + " --help")
    assert ("Usage: hsmsim " + " ".join(command)).rstrip() in r.stdout
    assert ("Examples:" in r.stdout) == (command == [])


@pytest.mark.parametrize("program", ["preloadrun", "hsmsim", "hsmfleet"])
def test_version_names_version_revision_and_build(program):
    path = PATHS[program]
    r = run(path, "--version")
    assert r.returncode == 0 and r.stderr == ""
    # "preloadrun 0.1.0 (REVISION; COMPILER VERSION, BUILD TYPE)"
    assert re.fullmatch(rf"{program} \d+\.\d+\.\d+ \([^;()]+; [^,()]+ [\d.]+, \w+[^()]*\)\n",
                        r.stdout), r.stdout


def one_line(r):
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_hsmfleet_serve_needs_to_be_told_what_to_serve():
    """hsmfleet serve never simulates by default (a fleet of real HSMs is never
    replaced by simulated ones by mistake); hsmsim serve does."""
    r = run(HSMFLEET, "serve")
    assert r.returncode == 2 and r.stdout == ""
    line = one_line(r)
    assert line.startswith("hsmfleet: serve what? --fleet FILE") and "--simulate" in line, line
    r = run(HSMFLEET, "serve", "--simulate", "--fleet", "/nonexistent.toml")
    assert r.returncode == 2 and "--fleet excludes --simulate" in one_line(r)
    r = run(HSMFLEET, "serve", "--fleet", "/nonexistent.toml", "--modules", "2")
    assert r.returncode == 2 and "--modules" in one_line(r)
    # Under both names, the help says what the program is.
    assert run(HSMFLEET, "--help").stdout.startswith("hsmfleet: one HSM service")
    assert run(HSMSIM, "--help").stdout.startswith("hsmsim: a simulated fleet")


def test_hsmsim_unknown_option_is_named():
    r = run(HSMSIM, "--bogus")
    assert r.returncode == 2
    line = one_line(r)
    assert "--bogus" in line and "hsmsim --help" in line


@pytest.mark.parametrize("command,names", [
    ([], "serve, softcard, cardset, key, module"),
    (["module"], "list, clear, fail, restore, remove, drain, undrain, add, latency, fail-next"),
    (["key"], "generate, delete, list"),
    (["softcard"], "create, delete, list"),
])
def test_hsmsim_missing_subcommand_lists_the_choices(command, names):
    r = run(HSMSIM, *command)
    assert r.returncode == 2 and r.stdout == ""
    path = " ".join(["hsmsim", *command])
    assert one_line(r) == f"{path}: a subcommand is required: {names} (see {path} --help)"


# A missing or bad option or argument of a subcommand: the one line points at
# the help that lists it, that subcommand's.
@pytest.mark.parametrize("argv,command,wanted", [
    (["key", "generate", "--label", "x", "--protect", "module"], "key generate", "--type"),
    (["key", "generate", "--type", "ec-p256", "--protect", "module"], "key generate", "--label"),
    (["key", "generate", "--type", "ec-p256", "--label", "x"], "key generate", "--protect"),
    (["-v", "key", "generate", "--type", "ec-p256", "--label", "x", "--protect", "module",
      "--bogus"], "key generate", "--bogus"),
    (["key", "generate", "--type", "ec-p256", "--label", "x", "--protect", "module", "--id",
      "zz"], "key generate", "--id"),
    (["key", "delete"], "key delete", "IDENT"),
    (["key", "destroy"], "key delete", "IDENT"),
    (["softcard", "create"], "softcard create", "NAME"),
    (["softcard", "delete"], "softcard delete", "NAME"),
    (["cardset", "delete", "x", "--with-key"], "cardset delete", "--with-key"),
    (["module", "latency", "1"], "module latency", "MS"),
    (["module", "fail-next"], "module fail-next", "N"),
    (["serve", "--modules", "0"], "serve", "--modules"),
])
def test_hsmsim_subcommand_usage_error_points_at_its_help(argv, command, wanted):
    r = run(HSMSIM, *argv)
    assert r.returncode == 2 and r.stdout == ""
    line = one_line(r)
    assert line.startswith("hsmsim: ") and line.endswith(f" (see hsmsim {command} --help)"), line
    assert wanted in line, line
    # That help lists what was missing.
    if wanted not in ("--bogus", "--with-key"):
        help_text = run(HSMSIM, *command.split(), "--help").stdout
        assert wanted in help_text, help_text


def test_preloadrun_subcommand_usage_error_points_at_its_help():
    r = run(PRELOADRUN, "status", "--bogus")
    assert r.returncode != 0
    line = one_line(r)
    assert "--bogus" in line and line.endswith("(see preloadrun status --help)"), line


def test_hsmsim_out_of_range_value_is_explained():
    r = run(HSMSIM, "module", "clear", "0")
    assert r.returncode == 2
    line = one_line(r)
    assert "N" in line and "1" in line and "128" in line and "hsmsim" in line


def test_preloadrun_unknown_option_is_named():
    r = run(PRELOADRUN, "--bogus")
    assert r.returncode == 125
    line = one_line(r)
    assert "--bogus" in line and "preloadrun --help" in line and "after --" in line
