"""The completions of preloadrun and hsmsim in the real shells.

Each test runs in every shell under test (conftest.py: `shell`), against a
real hsmsim service with the softcards card1 and card2 and the card set ops
(`world`), in a directory holding tokens.json, passphrase.txt, notes.md and
subdir/ (`workdir`). Every completion must print nothing on the shell's
error output.
"""

import os

import pytest

import shells
from conftest import executable

LEVELS = {"trace", "debug", "info", "warn", "error", "critical", "off"}
FILES = {"tokens.json", "passphrase.txt", "notes.md", "fleet.toml", "subdir"}
# A completion that asks a hung service waits 2 s (timeout -k 1 2); allow
# for a busy machine, but not for a second wait.
HUNG_LIMIT = 3.9
# Asking a service that is not there fails at once.
DOWN_LIMIT = 1.0


@pytest.fixture(scope="module")
def system_without_hsmsim(tmp_path_factory):
    return [shells.system_path_without(str(tmp_path_factory.mktemp("bin")), {"hsmsim"})]


@pytest.fixture
def complete(shell, world, home, workdir, system_without_hsmsim):
    """complete(line) -> candidates, in a shell with hsmsim and preloadrun on
    PATH and HSMSIM_SOCKET at the world's service. socket= sets another
    HSMSIM_SOCKET; with_hsmsim=False leaves hsmsim off PATH (preloadrun
    without it); full=True returns the shells.Completion (with the time
    taken)."""
    preloadrun_dir = os.path.dirname(executable("PRELOADRUN"))
    hsmsim_dir = os.path.dirname(executable("HSMSIM"))
    assert not os.path.exists(os.path.join(preloadrun_dir, "hsmsim"))

    def run(line, *, socket=world.socket, with_hsmsim=True, full=False):
        if with_hsmsim:
            path, system = [preloadrun_dir, hsmsim_dir], shells.SYSTEM_PATH
        else:
            path, system = [preloadrun_dir], system_without_hsmsim
        env = shells.shell_env(home, path, system, HSMSIM_SOCKET=socket)
        result = shells.complete(shell, line, env, workdir)
        assert result.errors == "", (
            f"{shell} printed on its error output while completing {line!r}:\n{result.errors}")
        return result if full else result.candidates

    return run


def plain(candidates, prefix=""):
    """The candidates as a set, without `prefix` (fish shows "--opt=value"
    and "TOKEN=FILE" whole) and without the "/" that marks a directory."""
    found = set()
    for candidate in candidates:
        if prefix and candidate.startswith(prefix):
            candidate = candidate[len(prefix):]
        found.add(candidate.rstrip("/"))
    return found


# -- preloadrun ---------------------------------------------------------------

def test_preloadrun_options(complete):
    assert set(complete("preloadrun --so")) == {"--softcard", "--socket"}
    assert set(complete("preloadrun --no")) == {"--no-ha"}
    assert set(complete("preloadrun --log-level ")) == LEVELS
    assert plain(complete("preloadrun -q --log-level="), "--log-level=") == LEVELS


def test_preloadrun_token_names_from_the_service(complete):
    assert set(complete("preloadrun -s ")) == {"card1", "card2"}
    assert set(complete("preloadrun --softcard c")) == {"card1", "card2"}
    assert set(complete("preloadrun -c ")) == {"ops"}
    assert plain(complete("preloadrun --cardset=o"), "--cardset=") == {"ops"}
    # -s takes one value: the next word is COMMAND (or a subcommand).
    after = set(complete("preloadrun -s card1 pkcs11-t"))
    assert "pkcs11-tool" in after and "card2" not in after
    assert "card2" not in complete("preloadrun --no-ha -c ops -s card1 ")


def test_preloadrun_asks_the_socket_given_on_the_line(complete, world, workdir):
    nowhere = os.path.join(workdir, "no-service.sock")
    assert complete("preloadrun -s ", socket=nowhere) == []
    assert set(complete(f"preloadrun --socket {world.socket} -s ", socket=nowhere)) == {
        "card1", "card2"}
    assert set(complete(f"preloadrun --socket={world.socket} -c ", socket=nowhere)) == {"ops"}


def test_preloadrun_with_the_service_down(complete, workdir):
    nowhere = os.path.join(workdir, "no-service.sock")
    result = complete("preloadrun -s ", socket=nowhere, full=True)
    assert result.candidates == []
    assert result.seconds < DOWN_LIMIT
    # The completion itself still works.
    assert set(complete("preloadrun --so", socket=nowhere)) == {"--softcard", "--socket"}


def test_preloadrun_with_the_service_hung(complete, hung_socket):
    result = complete("preloadrun -s ", socket=hung_socket, full=True)
    assert result.candidates == []
    assert result.seconds < HUNG_LIMIT


def test_preloadrun_without_hsmsim_installed(complete):
    assert complete("preloadrun -c ", with_hsmsim=False) == []
    assert set(complete("preloadrun --so", with_hsmsim=False)) == {"--softcard", "--socket"}


def test_preloadrun_file_options(complete):
    assert set(complete("preloadrun -f tok")) == {"tokens.json"}
    assert set(complete("preloadrun --attach no")) == {"notes.md"}
    assert set(complete("preloadrun --socket no")) == {"notes.md"}
    assert set(complete("preloadrun --passphrase-file pa")) == {"passphrase.txt"}
    # [TOKEN=]FILE
    assert plain(complete("preloadrun -s card1 --passphrase-file card1=pa"), "card1=") == {
        "passphrase.txt"}
    # --passphrase-file takes one value: then comes COMMAND.
    assert "pkcs11-tool" in complete("preloadrun -s a --passphrase-file a=x pkcs11-t")


def test_preloadrun_subcommands(complete):
    assert "check" in complete("preloadrun ch")
    assert "status" in complete("preloadrun -v sta")
    assert plain(complete("preloadrun check ")) >= FILES
    assert plain(complete("preloadrun status ")) >= FILES
    assert set(complete("preloadrun status --")) == {"--help", "--json"}
    assert set(complete("preloadrun check --")) == {"--help"}
    # After "--", check and status are commands, not subcommands.
    assert "check" not in complete("preloadrun -- ch")


def test_preloadrun_completes_the_command(complete):
    assert "pkcs11-tool" in complete("preloadrun -s card1 -- pkcs11-t")
    assert "pkcs11-tool" in complete("preloadrun --no-ha pkcs11-t")
    # Options with a value before the command are skipped with their value.
    assert "pkcs11-tool" in complete("preloadrun --retry-window 5m -f tokens.json pkcs11-t")


def test_preloadrun_hands_over_to_the_command_completion(complete):
    # ls's own options, from ls's completion (bash-completion's _longopt,
    # zsh's _ls, fish's ls.fish), not preloadrun's.
    for line in ("preloadrun -s card1 -- ls --al",
                 "preloadrun -s card1 ls --al",
                 "preloadrun --log-level debug ls --al",
                 "preloadrun --socket=/x -s card1 --no-ha ls --al"):
        found = set(complete(line))
        assert {"--all", "--almost-all"} <= found, line
        assert "--softcard" not in found
    assert "--softcard" not in complete("preloadrun -- ls --so")
    # The command's file arguments.
    assert plain(complete("preloadrun -- ls ")) >= FILES


# -- hsmsim -------------------------------------------------------------------

def test_hsmsim_subcommands(complete):
    assert set(complete("hsmsim ")) == {"serve", "softcard", "cardset", "key", "module"}
    assert set(complete("hsmsim module ")) == {
        "list", "clear", "fail", "restore", "remove", "drain", "undrain", "add", "latency",
        "fail-next"}
    assert set(complete("hsmsim key ")) == {"generate", "delete", "list"}
    assert set(complete("hsmsim --log-level debug softcard ")) == {"create", "delete", "list"}
    assert set(complete("hsmsim -q cardset cr")) == {"create"}


def test_hsmsim_options(complete):
    found = set(complete("hsmsim module list --"))
    assert {"--json", "--help", "--socket", "--admin-socket"} <= found
    found = set(complete("hsmsim serve --"))
    assert {"--fleet", "--kmdata", "--modules", "--op-latency-ms", "--init-delay-ms"} <= found
    assert "--json" not in found
    assert "--version" in complete("hsmsim --")
    assert set(complete("hsmsim --log-level ")) == LEVELS
    assert set(complete("hsmsim key generate --type ")) == {
        "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384",
        "aes-128", "aes-192", "aes-256"}


def test_hsmsim_module_numbers(complete, world, workdir):
    assert complete("hsmsim module clear ") == ["1"]
    assert complete("hsmsim -v module fail-next ") == ["1"]
    assert complete("hsmsim module drain ") == ["1"]
    assert complete("hsmsim module undrain ") == ["1"]
    # The second argument of latency is a number of milliseconds.
    assert complete("hsmsim module latency 1 ") == []
    nowhere = os.path.join(workdir, "no-service.sock")
    assert complete(f"hsmsim --socket {world.socket} module restore ", socket=nowhere) == ["1"]


def test_hsmsim_what_delete_deletes(complete, world):
    assert set(complete("hsmsim softcard delete ")) == {"card1", "card2"}
    assert set(complete("hsmsim cardset delete ")) == {"ops"}
    assert set(complete("hsmsim softcard delete --with-keys c")) == {"card1", "card2"}
    # One NAME only (zsh offers the options there).
    assert not {"card1", "card2"} & set(complete("hsmsim softcard delete card1 "))
    assert set(complete("hsmsim key delete ")) == {world.key}
    found = set(complete("hsmsim softcard delete --"))
    assert {"--with-keys", "--passphrase-file"} <= found
    assert "--allow-duplicate" in complete("hsmsim key generate --al")


def test_hsmsim_with_the_service_down_or_hung(complete, workdir, hung_socket):
    nowhere = os.path.join(workdir, "no-service.sock")
    result = complete("hsmsim module clear ", socket=nowhere, full=True)
    assert result.candidates == [] and result.seconds < DOWN_LIMIT
    result = complete("hsmsim module clear ", socket=hung_socket, full=True)
    assert result.candidates == [] and result.seconds < HUNG_LIMIT
    result = complete("hsmsim key generate --protect ", socket=hung_socket, full=True)
    assert "softcard:card1" not in result.candidates and result.seconds < HUNG_LIMIT


def test_hsmsim_protections(complete, shell):
    found = set(complete("hsmsim key generate --label k --protect "))
    if shell == "zsh":
        # zsh completes the kind first, then the name after "softcard:".
        assert found == {"module", "softcard", "cardset"}
    else:
        assert found == {"module", "softcard:card1", "softcard:card2", "cardset:ops"}
    assert plain(complete("hsmsim key generate --protect softcard:"), "softcard:") == {
        "card1", "card2"}
    assert plain(complete("hsmsim key generate --protect cardset:o"), "cardset:") == {"ops"}


def test_hsmsim_files(complete):
    assert set(complete("hsmsim softcard create x --passphrase-file pa")) == {"passphrase.txt"}
    assert set(complete("hsmsim --socket tok")) == {"tokens.json"}
    assert plain(complete("hsmsim --admin-socket=no"), "--admin-socket=") == {"notes.md"}
    found = plain(complete("hsmsim serve --kmdata "))
    assert "subdir" in found and "tokens.json" not in found
    # A fleet configuration is a .toml file (or one in a directory).
    found = plain(complete("hsmsim serve --fleet "))
    assert "fleet.toml" in found and "tokens.json" not in found
