"""Another local user cannot lock the others out by opening connections and
sending nothing: each user holds a share of the client socket's connections,
root and the service's user keep some of their own, the admin socket has its
own, and idle connections are closed, but never a subscription to events nor
the connection that keeps what a process loaded.

The users act through connection_client.py, a raw client of the wire
protocol run as their uid, and through the real hsmsim CLI, preloadrun and
the PKCS#11 module (p11_driver)."""

import json
import os
import subprocess
import time

from conftest import ATTACKER, PY, SERVICE, VICTIM, Actor
from procs import wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "connection_client.py")
OTHERS = (2002, 2003)  # two more local users, in the service's group too
IDLE = 2  # seconds: --idle-timeout of the idle test
WAIT = 60  # seconds: how long a test waits for the service to act


def client(machine, uid, *args):
    env = machine.env(uid, WIRE_PB2_DIR=os.environ["WIRE_PB2_DIR"], PYTHONDONTWRITEBYTECODE="1")
    return Actor(machine, uid, [PY, CLIENT, *args], env=env)


def flood(machine, uid, n):
    """`uid` opens n connections that send nothing; what the service did."""
    actor = client(machine, uid, "flood", n)
    return actor, actor.next()


def as_root(machine, *args):
    """`hsmsim ARGS` as root, pointed at the shared service."""
    return subprocess.run([machine.hsmsim, *args], env=machine.env(0), capture_output=True,
                          text=True, timeout=120)


def objects(machine):
    mods = json.loads(machine.admin("module", "list", "--json").stdout)
    return {m["number"]: m["objects"] for m in mods}


def session_key_app(machine, uid):
    """p11_driver as `uid`: a session key through the PKCS#11 module, then a
    signature with it per line it reads (two)."""
    app = Actor(machine, uid, [os.environ["P11_DRIVER"], "session-key",
                               os.environ["PKCS11_MODULE"], "2"], json_lines=False)
    assert app.next() == "generated"
    return app


def per_uid_message(uid, n):
    return (f"uid {uid} already has {n} connections open to hsmsim, the most one uid may "
            f"(hsmsim serve --max-connections-per-uid {n}); close one or try again later")


def test_no_user_nor_a_few_take_the_connections_from_others_or_from_root(machine):
    machine.start_service(extra=["--max-connections", "40", "--max-connections-per-uid", "8"])

    # One user opens connections that send nothing, more than its share:
    # the service takes 8 and refuses the others, saying why in one line.
    attacker, flooded = flood(machine, ATTACKER, 12)
    message = per_uid_message(ATTACKER, 8)
    assert flooded == {"taken": 8, "refused": 4, "messages": [message], "probe": message}
    r = machine.run(ATTACKER, [machine.hsmsim, "module", "list"])
    assert r.returncode == 1 and r.stderr == f"hsmsim: {message}\n", r.stderr
    log = machine.read_service_log()
    assert f"refused a connection from uid {ATTACKER}" in log and message in log, log

    # Everyone else still connects: another user's CLI and PKCS#11
    # application, root's CLI, and the service's user on both sockets.
    r = machine.run(VICTIM, [machine.hsmsim, "module", "list"])
    assert r.returncode == 0, r.stderr
    app = session_key_app(machine, VICTIM)
    assert app.ask("go\n") == "rv=0x0"
    assert app.ask("go\n") == "rv=0x0"
    app.finish()
    r = as_root(machine, "module", "list")
    assert r.returncode == 0, r.stderr
    machine.admin("module", "clear", "2")

    # Two more users fill what the others share (40 less the 16 kept for
    # root and the service's user): a fourth user is refused, root and the
    # service's user are not.
    floods = [flood(machine, uid, 8) for uid in OTHERS]
    for _, flooded in floods:
        assert flooded["taken"] == 8 and flooded["refused"] == 0, flooded
    r = machine.run(VICTIM, [machine.hsmsim, "module", "list"])
    assert r.returncode == 1, r.stdout
    assert r.stderr == (f"hsmsim: hsmsim already serves 24 connections of users other than "
                        f"root and uid {SERVICE}, all it serves them (hsmsim serve "
                        f"--max-connections 40, of which 16 are kept for root and uid "
                        f"{SERVICE}); try again later\n"), r.stderr
    r = as_root(machine, "module", "list", "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 2
    machine.admin("module", "list")
    machine.admin("module", "clear", "1")

    # Once one of them lets its connections go, the fourth user gets in.
    floods[0][0].finish()
    wait_for(lambda: machine.run(VICTIM, [machine.hsmsim, "module", "list"]).returncode == 0,
             WAIT, what="a connection for uid 2000 once uid 2002's went", interval=0.1)
    floods[1][0].finish()
    attacker.finish()


def test_idle_connections_close_but_not_a_subscription_nor_what_keeps_objects(machine):
    machine.start_service(extra=["--idle-timeout", str(IDLE)])
    passphrase = machine.file_for(SERVICE, "card.pp", "card passphrase\n")
    machine.admin("softcard", "create", "card", "--passphrase-file", passphrase)
    assert objects(machine) == {1: 0, 2: 0}

    # What must stay: a subscription, a raw client's oldest connection once
    # it has loaded (its second, idle too, goes), a PKCS#11 application's
    # session key, and the tokens preloadrun loaded.
    subscriber = client(machine, ATTACKER, "subscribe")
    assert subscriber.next() == {"subscribed": True}
    keeper = client(machine, VICTIM, "keep-and-load", 1)
    assert keeper.next()["loaded"]
    app = session_key_app(machine, VICTIM)
    victim_pass = machine.file_for(VICTIM, "card.pp", "card passphrase\n")
    tokens = os.path.join(machine.home(VICTIM), "tokens.json")
    preloadrun = machine.spawn(VICTIM, [machine.preloadrun, "-s", "card", "--passphrase-file",
                                        victim_pass, "--no-ha", "-f", tokens, "--",
                                        "sleep", "600"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: sum(objects(machine).values()) == 4, WAIT,
             what="the raw client's key, the application's and preloadrun's two tokens",
             interval=0.1)

    # What must go: connections that say nothing at all, and connections
    # that said Hello and then nothing.
    idle, flooded = flood(machine, ATTACKER, 6)
    assert flooded["taken"] == 6 and flooded["refused"] == 0, flooded
    assert flooded["probe"] is None
    wait_for(lambda: idle.ask()["open"] == 0, WAIT,
             what=f"the idle connections to close after {IDLE} s", interval=0.1)
    closed_after = idle.ask()["closed_after"]
    assert len(closed_after) == 6
    assert min(closed_after) >= IDLE - 0.05, closed_after
    assert "closed after 2 s idle (hsmsim serve --idle-timeout 2)" in machine.read_service_log()

    # Several idle timeouts later, all that must stay has stayed, and serves.
    time.sleep(3 * IDLE)
    assert sum(objects(machine).values()) == 4, machine.read_service_log()
    assert keeper.ask() == {"keeper_open": True, "loader_open": False, "sign": "ok"}
    assert app.ask("go\n") == "rv=0x0"
    assert preloadrun.poll() is None, preloadrun.stderr.read()
    machine.admin("module", "add")
    assert subscriber.next()["event"] == 3

    # Still so after another idle timeout, then gone with their processes.
    time.sleep(IDLE + 1)
    assert keeper.ask()["sign"] == "ok"
    assert app.ask("go\n") == "rv=0x0"
    app.finish()
    keeper.finish()
    preloadrun.terminate()
    assert preloadrun.wait(60) == 143, preloadrun.stderr.read()
    wait_for(lambda: sum(objects(machine).values()) == 0, WAIT, what="everything to be unloaded",
             interval=0.1)
    idle.finish()
    subscriber.proc.kill()
