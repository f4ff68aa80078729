"""Secrets in memory: what is left of a passphrase in the memory of the
processes that handle one, searched through /proc/PID/maps and
/proc/PID/mem (memory_probe.py).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from memory_probe import search  # noqa: E402
from wire_client import Client, recv_frame, send_frame, wire  # noqa: E402


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
