"""Managing keys and tokens end to end: `hsmsim key generate` refuses a key
whose label or id another key under the same protection has (unless
--allow-duplicate), `hsmsim key delete` and `hsmsim softcard delete` take
the token's passphrase, and what they delete is gone for the PKCS#11
clients (pkcs11-tool through libpreloadrun-pkcs11) and unloaded from every
module, also while preloadrun holds it.

Fixtures: conftest.py (`service`, `pr`, `pr_card`); helpers:
preloadrun_support.py.
"""

import os
import re
import subprocess

import pytest

from conftest import snapshot_dir
from preloadrun_support import wait_for

SANITIZED = os.environ.get("PRELOADRUN_SANITIZE") == "1"
needs_pkcs11_tool = pytest.mark.skipif(
    SANITIZED, reason="pkcs11-tool cannot load a module built with AddressSanitizer")


# -- helpers -------------------------------------------------------------------

def one_line(text):
    lines = text.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"expected a one-line message, got {text!r}"
    return lines[0]


def generate(sim, label, protect, passfile=None, key_id=None, *extra):
    args = ["key", "generate", "--type", "ec-p256", "--label", label, "--protect", protect]
    if key_id is not None:
        args += ["--id", key_id]
    if passfile is not None:
        args += ["--passphrase-file", passfile]
    return sim.run(*args, *extra)


def ident_of(r):
    m = re.search(r"\(ident ([0-9a-f]{40})\)", r.stdout)
    assert r.returncode == 0 and m, (r.returncode, r.stdout, r.stderr)
    return m.group(1)


def keys(sim):
    return sim.json("key", "list")


def objects(sim):
    return {m["number"]: m["objects"] for m in sim.json("module", "list")}


def pkcs11_module():
    module = os.environ.get("PKCS11_MODULE", "")
    assert os.path.isfile(module), "PKCS11_MODULE: run these tests through ctest"
    return module


def pkcs11_tool(env, *args):
    return subprocess.run(["pkcs11-tool", "--module", pkcs11_module(), *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def private_keys_seen(env, token, pin):
    """The labels and ids of the private keys pkcs11-tool finds on `token`."""
    r = pkcs11_tool(env, "--token-label", token, "--login", "--pin", pin, "--list-objects",
                    "--type", "privkey")
    assert r.returncode == 0, r.stdout + r.stderr
    return re.findall(r"label:\s+(\S+)\s+ID:\s+(\S+)", r.stdout)


# -- duplicates ----------------------------------------------------------------------

def test_a_duplicate_label_or_id_under_one_protection_is_refused(service):
    card = service.passfile("card-pass")
    service.ok("softcard", "create", "dupcard", "--passphrase-file", card)
    first = ident_of(generate(service, "signer", "softcard:dupcard", card, "01"))
    before = snapshot_dir(service.kmdata)

    # The same label, then the same id: refused before the passphrase is
    # even asked (no --passphrase-file, no terminal), naming the key.
    for label, key_id, what in (("signer", "02", "label 'signer'"), ("other", "01", "id 01")):
        r = subprocess.run([service.bin, "key", "generate", "--type", "ec-p256", "--label",
                            label, "--id", key_id, "--protect", "softcard:dupcard"],
                           env=service.env, capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
        line = one_line(r.stderr)
        assert line == (f"hsmsim: a key protected by softcard 'dupcard' already has the {what} "
                        f"(key {first}); add --allow-duplicate to make another all the same")
        assert r.stdout == ""
    assert snapshot_dir(service.kmdata) == before
    assert all(n == 0 for n in objects(service).values())

    # Another protection is another namespace: the module, another softcard.
    ident_of(generate(service, "signer", "module", None, "01"))
    other = service.passfile("other-pass")
    service.ok("softcard", "create", "othercard", "--passphrase-file", other)
    ident_of(generate(service, "signer", "softcard:othercard", other, "01"))
    r = generate(service, "signer", "module")
    assert r.returncode == 1 and "a module-protected key already has the label 'signer'" in \
        one_line(r.stderr), r.stderr
    # Keys without an id never collide by id.
    ident_of(generate(service, "a", "module"))
    ident_of(generate(service, "b", "module"))


@needs_pkcs11_tool
def test_allow_duplicate_makes_one_and_pkcs11_sees_both(service):
    card = service.passfile("card-pass")
    service.ok("softcard", "create", "twins", "--passphrase-file", card)
    one = ident_of(generate(service, "twin", "softcard:twins", card, "01"))
    two = ident_of(generate(service, "twin", "softcard:twins", card, "01", "--allow-duplicate"))
    assert one != two
    assert [k["ident"] for k in keys(service) if k["label"] == "twin"] == sorted([one, two])
    assert private_keys_seen(service.env, "twins", "card-pass") == [("twin", "01")] * 2


# -- key delete ------------------------------------------------------------------------

@needs_pkcs11_tool
def test_key_delete_and_pkcs11_tool_no_longer_finds_it(service):
    card = service.passfile("card-pass")
    service.ok("softcard", "create", "dk", "--passphrase-file", card)
    gone = ident_of(generate(service, "gone", "softcard:dk", card, "01"))
    kept = ident_of(generate(service, "kept", "softcard:dk", card, "02"))
    assert sorted(private_keys_seen(service.env, "dk", "card-pass")) == [
        ("gone", "01"), ("kept", "02")]

    # The wrong passphrase: refused, nothing changes, nothing stays loaded.
    before = snapshot_dir(service.kmdata)
    r = service.run("key", "delete", gone, "--passphrase-file", service.passfile("nope"))
    assert r.returncode == 1 and "wrong passphrase for softcard 'dk'" in one_line(r.stderr), \
        r.stderr
    assert snapshot_dir(service.kmdata) == before
    assert all(n == 0 for n in objects(service).values())

    r = service.ok("key", "delete", gone, "--passphrase-file", card)
    assert r.stdout == f"deleted key 'gone' (ident {gone}) protected by softcard dk\n"
    assert [k["ident"] for k in keys(service)] == [kept]
    assert private_keys_seen(service.env, "dk", "card-pass") == [("kept", "02")]
    r = pkcs11_tool(service.env, "--token-label", "dk", "--login", "--pin", "card-pass",
                    "--sign", "--id", "01", "-m", "ECDSA", "--input-file", "/dev/null")
    assert r.returncode != 0 and "not found" in (r.stdout + r.stderr).lower(), r.stdout + r.stderr

    # Its former name still works, for scripts.
    r = service.ok("key", "destroy", kept, "--passphrase-file", card)
    assert r.stdout.startswith("deleted key 'kept'")
    assert keys(service) == []


def test_key_delete_of_an_unknown_key(service):
    r = service.run("key", "delete", "0" * 40)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert one_line(r.stderr) == (f"hsmsim: no key with ident {'0' * 40} in this world "
                                  "(see: hsmsim key list)")
    r = service.run("key", "delete", "not-an-ident")
    assert r.returncode == 2 and "40 lowercase hex digits" in one_line(r.stderr)


# -- softcard delete ------------------------------------------------------------------

def test_softcard_delete_needs_its_passphrase_and_its_keys_gone_or_with_keys(service):
    card = service.passfile("card-pass")
    service.ok("softcard", "create", "sd", "--passphrase-file", card)
    service.ok("softcard", "create", "bystander", "--passphrase-file", card)
    k1 = ident_of(generate(service, "k1", "softcard:sd", card, "01"))
    k2 = ident_of(generate(service, "k2", "softcard:sd", card, "02"))
    kept = ident_of(generate(service, "k1", "softcard:bystander", card, "01"))
    module_key = ident_of(generate(service, "k1", "module", None, "01"))
    before = snapshot_dir(service.kmdata)

    # Keys left: refused at once, naming them and the way on (no passphrase asked).
    r = subprocess.run([service.bin, "softcard", "delete", "sd"], env=service.env,
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert one_line(r.stderr) == (
        "hsmsim: softcard 'sd' protects 2 key(s) ('k1', 'k2'): delete them first (hsmsim key "
        "delete IDENT), or add --with-keys to delete them with it")
    # The wrong passphrase.
    r = service.run("softcard", "delete", "sd", "--with-keys", "--passphrase-file",
                    service.passfile("wrong"))
    assert r.returncode == 1 and "wrong passphrase for softcard 'sd'" in one_line(r.stderr)
    # Unknown names: softcards and card sets are apart.
    r = service.run("softcard", "delete", "ghost", "--passphrase-file", card)
    assert r.returncode == 1 and one_line(r.stderr) == (
        "hsmsim: no softcard named 'ghost' in this world (see: hsmsim softcard list)")
    r = service.run("cardset", "delete", "sd", "--passphrase-file", card)
    assert r.returncode == 1 and "no cardset named 'sd'" in one_line(r.stderr)
    assert snapshot_dir(service.kmdata) == before
    assert all(n == 0 for n in objects(service).values())

    r = service.ok("softcard", "delete", "sd", "--with-keys", "--passphrase-file", card)
    assert re.fullmatch(r"deleted softcard 'sd' \(hash [0-9a-f]{40}\) and the 2 key\(s\) it "
                        r"protected: 'k1', 'k2'\n", r.stdout), r.stdout
    assert [t["name"] for t in service.json("softcard", "list")] == ["bystander"]
    assert sorted(k["ident"] for k in keys(service)) == sorted([kept, module_key])
    left = sorted(os.listdir(service.kmdata))
    assert not [n for n in left if n.startswith(".") and n != ".lock"], left
    assert not {f"key_{k1}", f"key_{k2}"} & set(left)
    assert all(n == 0 for n in objects(service).values())
    # The command's own token went with the rest: nothing failed unloading it.
    assert all(m["ops_failed"] == 0 for m in service.json("module", "list")), \
        service.json("module", "list")

    # A token without keys goes without --with-keys; its name is free again.
    service.ok("softcard", "create", "empty", "--passphrase-file", card)
    r = service.ok("softcard", "delete", "empty", "--passphrase-file", card)
    assert re.fullmatch(r"deleted softcard 'empty' \(hash [0-9a-f]{40}\)\n", r.stdout), r.stdout
    service.ok("softcard", "create", "sd", "--passphrase-file", service.passfile("new"))


def test_cardset_delete(service):
    pf = service.passfile("ops-pass")
    service.ok("cardset", "create", "ops", "--passphrase-file", pf)
    ident_of(generate(service, "opskey", "cardset:ops", pf))
    r = service.ok("cardset", "delete", "ops", "--with-keys", "--passphrase-file", pf)
    assert r.stdout.startswith("deleted cardset 'ops'")
    assert service.json("cardset", "list") == [] and keys(service) == []


# -- while preloadrun holds it ------------------------------------------------------------

def test_deleting_what_preloadrun_holds_unloads_it_everywhere(pr_card):
    pr = pr_card
    sim = pr.sim
    key = ident_of(generate(sim, "held", "softcard:c1", pr.card_pass, "01"))
    tok = pr.tokens_file()
    p = pr.start("-s", "c1", "--passphrase-file", pr.card_pass, "-f", tok, "--", "sleep", "300",
                 stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(tok) or p.poll() is not None,
             what="the tokens file to be published")
    assert p.poll() is None, pr.stderr_of(p)
    wait_for(lambda: objects(sim) == {1: 1, 2: 1}, what="c1 loaded on both modules")

    # The key first: its token stays loaded.
    sim.ok("key", "delete", key, "--passphrase-file", pr.card_pass)
    assert objects(sim) == {1: 1, 2: 1}
    # Then the token itself: unloaded from both modules at once, whoever
    # loaded it; preloadrun's handles in the tokens file are now invalid.
    sim.ok("softcard", "delete", "c1", "--passphrase-file", pr.card_pass)
    assert objects(sim) == {1: 0, 2: 0}
    assert re.search(r"destroyed softcard 'c1' .*; unloaded \d+ object\(s\) loaded from it",
                     sim.log()), sim.log()
    if not SANITIZED:
        env = dict(pr.env, NFAST_NFKM_TOKENSFILE=tok)
        r = pkcs11_tool(env, "--token-label", "c1", "--list-objects")
        assert r.returncode != 0, r.stdout + r.stderr
    assert p.poll() is None, pr.stderr_of(p)
