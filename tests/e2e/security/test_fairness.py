"""Another local user cannot take a module over, nor lock a user out of its
token: per-uid shares of each module's objects and operation time, and a
per-uid rate limit on wrong passphrases that costs the service no KDF.

The users act through fairness_client.py, a raw client of the wire protocol
run as their uid. Counts and order decide the outcomes, not wall-clock
thresholds."""

import json
import os

import pytest

from conftest import ATTACKER, PY, SERVICE, VICTIM, Actor
from procs import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "fairness_client.py")
WAIT = 30  # seconds: how long a test waits for the service to act


def fairness_actor(machine, uid, *args):
    """fairness_client.py running as `uid`; its JSON lines, one at a time."""
    env = machine.env(uid, WIRE_PB2_DIR=os.environ["WIRE_PB2_DIR"],
                      PYTHONDONTWRITEBYTECODE="1")
    return Actor(machine, uid, [PY, CLIENT, *args], env=env)


def act(machine, uid, *args, lines=1):
    """Runs fairness_client.py as `uid` to the end; its JSON lines."""
    actor = fairness_actor(machine, uid, *args)
    out = [actor.next() for _ in range(lines)]
    actor.finish()
    return out if lines > 1 else out[0]


def module(machine, number):
    mods = json.loads(machine.admin("module", "list", "--json").stdout)
    return next(m for m in mods if m["number"] == number)


def module_protected_key(machine):
    machine.admin("key", "generate", "--type", "ec-p256", "--label", "shared",
                  "--protect", "module")
    keys = json.loads(machine.admin("key", "list", "--json").stdout)
    return next(k["ident"] for k in keys if k["label"] == "shared")


def softcard(machine, name, passphrase):
    f = machine.file_for(SERVICE, f"{name}.pp", passphrase + "\n")
    machine.admin("softcard", "create", name, "--passphrase-file", f)
    cards = json.loads(machine.admin("softcard", "list", "--json").stdout)
    return next(c["hash"] for c in cards if c["name"] == name)


# ---- objects ----------------------------------------------------------------

def test_a_user_fills_its_share_of_a_module_not_the_module(machine):
    machine.start_service(extra=["--max-objects-per-uid", "20"])
    ident = module_protected_key(machine)
    objects_before = module(machine, 1)["objects"]

    attacker = fairness_actor(machine, ATTACKER, "fill", 1, ident)
    filled = attacker.next()
    assert filled["code"] == "ERROR_LIMIT", filled
    assert filled["loaded"] == 20
    message = filled["message"]
    assert "uid 2001" in message and "module 1" in message, message
    assert "--max-objects-per-uid 20" in message, message
    assert "\n" not in message

    # While the attacker holds all of its share, the victim loads there.
    victim = act(machine, VICTIM, "load-key", 1, ident)
    assert victim.get("handle"), victim
    # The victim's object went with its process; the attacker's share stays.
    wait_for(lambda: module(machine, 1)["objects"] == objects_before + 20, WAIT,
             what="the victim's object to be unloaded when its process ended")
    attacker.finish()


# ---- operation time -----------------------------------------------------------

def test_a_flood_of_slow_operations_delays_another_user_by_about_one(shared):
    shared.admin("module", "latency", "1", "200")  # every operation on module 1: 200 ms
    ops_before = module(shared, 1)["ops"]
    flood = fairness_actor(shared, ATTACKER, "flood", 1, 8)
    assert flood.next()["flooding"] == 8
    # The flood is under way (8 operations in line): the module served two.
    wait_for(lambda: module(shared, 1)["ops"] >= ops_before + 2, WAIT,
             what="the flood to be served")

    # How many of the attacker's operations the module completed while the
    # victim's key generation, then its signature, waited and ran: the one
    # running when it came (two at most, when one ends just as it comes),
    # not the 7 others in line.
    victim = act(shared, VICTIM, "victim-ops", 1)
    flood.close()
    assert flood.next()["done"] >= 2
    flood.finish()
    assert victim["generate"] <= 2, victim
    assert victim["sign"] <= 2, victim


# ---- passphrases ----------------------------------------------------------------

def test_wrong_passphrases_lock_out_only_the_user_who_typed_them(shared):
    token_hash = softcard(shared, "victimcard", "correct horse")

    tries = act(shared, ATTACKER, "guess", 1, token_hash, 8, "nope-", lines=8)
    codes = [t["code"] for t in tries]
    assert codes == ["ERROR_WRONG_PASSPHRASE"] * 5 + ["ERROR_TOO_MANY_ATTEMPTS"] * 3, tries
    assert tries[5]["message"] == ("too many wrong passphrases for softcard 'victimcard' "
                                   "from this user; try again in 1 s")

    # The victim, same softcard, right passphrase: loads at once, on the
    # module the attacker tried, and its preloadrun runs, while the attacker
    # keeps trying.
    passphrase = shared.file_for(VICTIM, "pp", "correct horse\n")
    hammer = fairness_actor(shared, ATTACKER, "hammer", 1, token_hash, "again-")
    victim = act(shared, VICTIM, "load-token", 1, token_hash, passphrase)
    assert victim.get("handle"), victim
    run = shared.run(VICTIM, [shared.preloadrun, "-s", "victimcard", "--passphrase-file",
                              passphrase, "--no-ha", "-f",
                              os.path.join(shared.home(VICTIM), "tokens.json"), "--", "true"])
    assert run.returncode == 0, run.stderr
    hammer.close()
    hammered = hammer.next()["codes"]
    hammer.finish()
    assert hammered.get("ERROR_TOO_MANY_ATTEMPTS", 0) > 0, hammered
    assert "loaded" not in hammered, hammered


def test_a_wrong_passphrase_does_not_hold_the_module_nor_run_the_kdf_once_refused(shared):
    token_hash = softcard(shared, "slowcard", "correct horse")
    # Make the KDF of this softcard slow (the iteration count is in its
    # file): a try that runs it takes long; one that does not, no time.
    card = os.path.join(shared.kmdata, f"card_{token_hash}")
    with open(card) as f:
        doc = json.load(f)
    doc["iterations"] = 1_500_000
    with open(card, "w") as f:
        json.dump(doc, f)

    # While the attacker's passphrase is being checked, the victim makes 5
    # signatures on module 1 (20 ms each): all of them are answered before
    # the attacker is, so the check does not hold the module.
    shared.admin("module", "latency", "1", "20")
    victim = fairness_actor(shared, VICTIM, "sign-on-go", 1, 5)
    assert victim.next()["ready"]
    attacker = fairness_actor(shared, ATTACKER, "slow-guess", 1, token_hash, "nope")
    assert attacker.next()["sent"]
    victim.tell()
    signed = victim.next()["times"]
    guessed = attacker.next()
    victim.finish()
    attacker.finish()
    assert guessed["code"] == "ERROR_WRONG_PASSPHRASE", guessed
    before = [t for t in signed if t < guessed["t"]]
    assert len(before) == 5, f"{len(before)} of 5 signatures answered before the attacker was"

    tries = act(shared, ATTACKER, "guess", 1, token_hash, 5, "more-", lines=5)
    assert [t["code"] for t in tries] == ["ERROR_WRONG_PASSPHRASE"] * 4 + \
        ["ERROR_TOO_MANY_ATTEMPTS"], tries
    checked = min(t["seconds"] for t in tries[:4])
    refused = tries[4]["seconds"]
    assert refused < checked / 10, f"refused in {refused:.3f} s, checked in {checked:.3f} s"


@pytest.mark.skipif(os.environ.get("PRELOADRUN_SANITIZE") == "1",
                    reason="pkcs11-tool cannot load a module built with AddressSanitizer")
def test_pkcs11_login_gives_pin_locked_to_the_guesser_only(shared):
    softcard(shared, "p11card", "correct horse")

    def login(uid, pin):
        r = shared.run(uid, ["pkcs11-tool", "--module", os.environ["PKCS11_MODULE"],
                             "--token-label", "p11card", "--login", "--pin", pin,
                             "--list-objects"],
                       env=shared.env(uid, CKNFAST_LOADSHARING="1"))
        return r.returncode, r.stdout + r.stderr

    for i in range(5):
        status, out = login(ATTACKER, f"wrong-{i}")
        assert status != 0 and "CKR_PIN_INCORRECT" in out, out
    status, out = login(ATTACKER, "wrong-5")
    assert status != 0 and "CKR_PIN_LOCKED" in out, out
    status, out = login(VICTIM, "correct horse")
    assert status == 0, out
