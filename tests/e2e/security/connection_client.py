"""A client of hsmsim that test_connections.py runs as one local user
(through setpriv): it opens connections and holds them, and says what became
of them as JSON lines on stdout.

  flood N            opens N connections one after another and sends nothing
                     on them; then one more that says Hello, whose answer
                     (a Hello, or the refusal of a full share) shows that the
                     service has taken or refused all the others. Says how
                     many it took, how many it refused and with which
                     messages. Then, on each line read from stdin, says how
                     many of those it took are still open, and after how many
                     seconds the service closed the others; until stdin
                     closes.
  subscribe          subscribes to module events; says "subscribed"; then one
                     line per event; "closed" if the service closes it
  keep-and-load M    opens a connection that says Hello and then nothing
                     (the one that keeps what the process loads), then a
                     second that generates a session key on module M; says
                     "loaded". On each line read from stdin, says which of
                     the two are still open and signs with the key over the
                     first; until stdin closes.
"""

import json
import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wire_client import PROTOCOL_VERSION, Client, recv_frame, send_frame, wire  # noqa: E402

SOCKET = os.environ["HSMSIM_SOCKET"]


def say(**fields):
    print(json.dumps(fields), flush=True)


def still_open(sock):
    """True while the service has neither closed `sock` nor written to it."""
    readable, _, _ = select.select([sock], [], [], 0)
    return not readable


def refusal(sock, timeout=60.0):
    """The message of the error the service answered first on `sock`, or
    None when it answered a Hello."""
    sock.settimeout(timeout)
    msg = wire.ServerMessage()
    msg.ParseFromString(recv_frame(sock))
    resp = msg.response
    if resp.WhichOneof("body") == "error":
        return resp.error.message
    return None


class Watch:
    """When the service closes each of some connections (seconds after it
    was opened), watched by a thread."""

    def __init__(self, opened):
        self.opened = dict(opened)  # socket -> time opened
        self.closed_after = []
        self.lock = threading.Lock()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            with self.lock:
                open_now = list(self.opened)
            if not open_now:
                return
            readable, _, _ = select.select(open_now, [], [], 0.05)
            for sock in readable:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    with self.lock:
                        self.closed_after.append(time.monotonic() - self.opened.pop(sock))

    def report(self):
        with self.lock:
            return {"open": len(self.opened), "closed_after": sorted(self.closed_after)}


def flood(n):
    socks = []
    opened = {}
    for _ in range(n):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(SOCKET)
        opened[sock] = time.monotonic()
        socks.append(sock)
    # The service takes connections in order: once this one is answered,
    # every one before it was taken (nothing to read) or refused (its error
    # waits to be read).
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.connect(SOCKET)
    req = wire.Request()
    req.id = 1
    req.hello.version = PROTOCOL_VERSION
    req.hello.client = "connection_client probe"
    try:
        send_frame(probe, req.SerializeToString())
    except OSError:
        pass  # refused and closed already: its answer waits to be read
    probe_refused = refusal(probe)
    probe.close()
    taken, messages = [], []
    for sock in socks:
        if still_open(sock):
            taken.append(sock)
        else:
            messages.append(refusal(sock, 5.0))
            sock.close()
    say(taken=len(taken), refused=len(messages), messages=sorted(set(messages)),
        probe=probe_refused)
    watch = Watch({sock: opened[sock] for sock in taken})
    for _ in sys.stdin:
        say(**watch.report())


def subscribe():
    client = Client(SOCKET, name="connection_client subscriber")
    req = wire.Request()
    req.subscribe.SetInParent()
    snapshot = client.call(req)
    assert snapshot.WhichOneof("body") == "modules", snapshot
    say(subscribed=True)
    client.sock.settimeout(None)
    while True:
        try:
            frame = recv_frame(client.sock)
        except (EOFError, OSError):
            say(closed=True)
            return
        msg = wire.ServerMessage()
        msg.ParseFromString(frame)
        if msg.WhichOneof("kind") != "event":
            say(unexpected=str(msg))
            return
        say(event=msg.event.module.number, state=wire.ModuleState.Name(msg.event.module.state))


def keep_and_load(module):
    keeper = Client(SOCKET, name="connection_client keeper")
    loader = Client(SOCKET, name="connection_client loader")
    req = wire.Request()
    req.generate_key.module = module
    req.generate_key.type = wire.KEY_EC_P256
    req.generate_key.label = "kept"
    req.generate_key.persistent = False
    resp = loader.call(req)
    if resp.WhichOneof("body") != "generated":
        say(error=str(resp))
        return
    handle = resp.generated.handle
    say(loaded=True, handle=handle)
    for _ in sys.stdin:
        state = {"keeper_open": still_open(keeper.sock), "loader_open": still_open(loader.sock)}
        if state["keeper_open"]:
            sign = wire.Request()
            sign.sign.module = module
            sign.sign.handle = handle
            sign.sign.data = b"\x01" * 32
            sign.sign.mechanism.kind = wire.MECH_ECDSA
            answer = keeper.call(sign)
            state["sign"] = ("ok" if answer.WhichOneof("body") == "data"
                             else wire.ErrorCode.Name(answer.error.code))
        say(**state)


def main(argv):
    action, *rest = argv
    if action == "flood":
        flood(int(rest[0]))
    elif action == "subscribe":
        subscribe()
    elif action == "keep-and-load":
        keep_and_load(int(rest[0]))
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main(sys.argv[1:])
