"""Secrets in memory: no other process, not even one of the same uid, reads a
passphrase out of preloadrun or a key out of `hsmsim serve`.

preloadrun runs as VICTIM with a softcard and a passphrase file; its child,
the same uid, tries to read preloadrun's memory through /proc/PPID/maps and
/proc/PPID/mem and to find the passphrase there. preloadrun is not dumpable,
so both are refused; the child itself is dumpable again after execve (a
process of its own stays readable to it, which shows that the refusal comes
from preloadrun, not from the machine). With --no-ha preloadrun needs the
passphrase for the first load only, and nothing of it is left in its memory
afterwards (searched as root, who may read it); in HA mode it keeps it for
the reloads. hsmsim serve is not dumpable either, and wipes the passphrase of
a request however the request ends.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import PY, SERVICE, VICTIM

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE = os.path.join(HERE, "memory_probe.py")
sys.path.insert(0, HERE)
from memory_probe import search  # noqa: E402
from wire_client import Client, recv_frame, send_frame, wire  # noqa: E402

PASSPHRASE = "Mem0ry-Pr0be-Passphrase-5f1c2e9b"
CARD = "memcard"


@pytest.fixture
def victim(shared):
    """`shared` with softcard CARD (passphrase PASSPHRASE) and VICTIM's
    passphrase file for it."""
    setup = shared.file_for(SERVICE, "card-pass", PASSPHRASE + "\n")
    shared.admin("softcard", "create", CARD, "--passphrase-file", setup)
    shared.passfile = shared.file_for(VICTIM, "card-pass", PASSPHRASE + "\n")
    return shared


def start_preloadrun(machine, *options):
    """preloadrun as VICTIM, its child memory_probe.py in `parent` mode; the
    process and the child's report (a dict)."""
    tokens = os.path.join(machine.home(VICTIM), "tokens.json")
    proc = machine.spawn(
        VICTIM, [machine.preloadrun, "-s", CARD, "--passphrase-file", machine.passfile,
                 "-f", tokens, *options, "--", PY, PROBE, "parent", machine.passfile],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"preloadrun ended ({proc.returncode}) before its child reported:\n"
                    f"{proc.stderr.read().decode(errors='replace')}")
    return proc, json.loads(line)


def stop(proc):
    """SIGTERM to preloadrun reaches the child, which exits 0: so does preloadrun."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0, proc.stderr.read().decode(errors="replace")


@pytest.mark.parametrize("mode", ["ha", "no-ha"])
def test_the_child_cannot_read_preloadrun_s_memory(victim, mode):
    proc, report = start_preloadrun(victim, *(["--no-ha"] if mode == "no-ha" else []))
    try:
        assert report["parent_name"] == "preloadrun", report
        assert report["parent"] == {"maps": "PermissionError", "mem": "PermissionError",
                                    "found": None}, report
        # The same search works on a process of the child's own: readable, found.
        assert report["control"] == {"maps": "ok", "mem": "ok", "found": True}, report
        # execve made the child dumpable again (preloadrun's setting is not inherited).
        assert report["dumpable"] == 1, report

        # Root may read it: the passphrase is there for the reloads in HA
        # mode, and gone once the tokens are loaded with --no-ha.
        as_root = search(proc.pid, PASSPHRASE.encode())
        assert as_root["maps"] == "ok" and as_root["mem"] == "ok", as_root
        assert as_root["found"] is (mode == "ha"), as_root
    finally:
        stop(proc)


def test_hsmsim_serve_cannot_be_read_by_its_own_uid(shared):
    pid = shared.service.pid
    r = shared.run(SERVICE, [PY, PROBE, "pid", pid, "anything"], env=shared.service_env(),
                   groups=())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"maps": "PermissionError", "mem": "PermissionError",
                                    "found": None}, r.stdout
    # Not for want of a process: root reads it.
    assert search(pid, b"hsmsim")["mem"] == "ok"


def test_a_request_cut_short_leaves_no_passphrase_in_the_service(shared):
    """hsmsim serve wipes the passphrase a request carries however the request
    ends: here a LoadToken followed by bytes that do not parse, so that
    decoding fails after the passphrase was read. Root searches the service's
    memory afterwards: the passphrase is nowhere."""
    needle = b"Cut-Short-Passphrase-" + b"7c1e94d2a05f" * 4
    client = Client(shared.socket)
    request = wire.Request(id=2)
    request.load_token.module = 1
    request.load_token.token_hash = bytes(20)
    request.load_token.passphrase = needle
    send_frame(client.sock, request.SerializeToString() + b"\xff\xff\xff\xff")
    reply = wire.ServerMessage()
    reply.ParseFromString(recv_frame(client.sock))
    assert reply.response.HasField("error"), reply
    assert client.sock.recv(1) == b"", "the service closes such a connection"
    client.close()
    pid = shared.service.pid
    # What the service does keep is found: the search works on its memory.
    assert search(pid, shared.socket.encode())["found"] is True
    # Not even its tail (the allocator reuses the first bytes of a freed block).
    assert search(pid, needle[-32:])["found"] is False
