"""A client of hsmsim that test_fairness.py runs as one local user (through
setpriv): one action per run, its outcome as JSON lines on stdout.

  fill MODULE IDENT           load key IDENT on MODULE until refused; then
                              hold the objects until stdin closes
  load-key MODULE IDENT       load key IDENT once
  flood MODULE CONNECTIONS    Random on MODULE from that many connections at
                              once, each again as soon as answered, until
                              stdin closes
  victim-ops MODULE           generate a session key then sign on MODULE;
                              for each, how many other operations the module
                              completed while it waited
  guess MODULE HASH N PREFIX  N wrong passphrases in a row for token HASH
  hammer MODULE HASH PREFIX   wrong passphrases for token HASH, one every few
                              milliseconds, until stdin closes; the answers
  slow-guess MODULE HASH P    one try, saying "sent" as soon as it is sent
  sign-on-go MODULE COUNT     a session key on MODULE; once a line arrives
                              on stdin, COUNT signatures in a row; when
                              each answer came
  load-token MODULE HASH FILE load token HASH with the passphrase in FILE
"""

import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wire_client import Client, wire  # noqa: E402

SOCKET = os.environ["HSMSIM_SOCKET"]


def say(**fields):
    print(json.dumps(fields), flush=True)


def error_of(response):
    if response.WhichOneof("body") != "error":
        return None
    return {"code": wire.ErrorCode.Name(response.error.code),
            "message": response.error.message}


def request(**body):
    req = wire.Request()
    for name, fields in body.items():
        getattr(req, name).SetInParent()
        for key, value in fields.items():
            setattr(getattr(req, name), key, value)
    return req


def module_ops(client, module):
    resp = client.call(request(list_modules={}))
    return next(m.ops for m in resp.modules.modules if m.number == module)


def session_key(client, module):
    resp = client.call(request(generate_key={
        "module": module, "type": wire.KEY_EC_P256, "label": "fair", "persistent": False}))
    if error_of(resp):
        raise RuntimeError(f"GenerateKey: {error_of(resp)}")
    return resp.generated.handle


def sign_request(module, handle):
    req = request(sign={"module": module, "handle": handle, "data": b"\x01" * 32})
    req.sign.mechanism.kind = wire.MECH_ECDSA
    return req


def fill(module, ident):
    client = Client(SOCKET)
    loaded = 0
    while True:
        resp = client.call(request(load_key={"module": module, "ident": ident}))
        if error_of(resp):
            say(loaded=loaded, **error_of(resp))
            break
        loaded += 1
    sys.stdin.read()  # hold them until told


def load_key(module, ident):
    resp = Client(SOCKET).call(request(load_key={"module": module, "ident": ident}))
    say(**(error_of(resp) or {"handle": resp.handle.handle}))


def flood(module, connections):
    clients = [Client(SOCKET) for _ in range(connections)]
    stop = threading.Event()
    done = [0] * connections

    def loop(i):
        while not stop.is_set():
            resp = clients[i].call(request(random={"module": module, "length": 16}))
            if error_of(resp):
                raise RuntimeError(f"Random: {error_of(resp)}")
            done[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    say(flooding=connections)
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join()
    say(done=sum(done))


def victim_ops(module):
    client = Client(SOCKET)
    before = module_ops(client, module)
    handle = session_key(client, module)
    after_generate = module_ops(client, module)
    resp = client.call(sign_request(module, handle))
    if error_of(resp):
        raise RuntimeError(f"Sign: {error_of(resp)}")
    after_sign = module_ops(client, module)
    # Each count leaves out the victim's own operation.
    say(generate=after_generate - before - 1, sign=after_sign - after_generate - 1)


def guess(module, token_hash, count, prefix):
    client = Client(SOCKET)
    for i in range(count):
        t0 = time.monotonic()
        resp = client.call(request(load_token={
            "module": module, "token_hash": token_hash,
            "passphrase": f"{prefix}{i}".encode()}))
        took = time.monotonic() - t0
        say(seconds=took, **(error_of(resp) or {"handle": resp.handle.handle}))


def hammer(module, token_hash, prefix):
    client = Client(SOCKET)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    codes = {}
    i = 0
    while not stop.is_set():
        resp = client.call(request(load_token={
            "module": module, "token_hash": token_hash,
            "passphrase": f"{prefix}{i}".encode()}))
        code = (error_of(resp) or {"code": "loaded"})["code"]
        codes[code] = codes.get(code, 0) + 1
        i += 1
        time.sleep(0.005)
    say(codes=codes)


def slow_guess(module, token_hash, passphrase):
    from wire_client import recv_frame, send_frame
    client = Client(SOCKET)
    req = request(load_token={"module": module, "token_hash": token_hash,
                              "passphrase": passphrase.encode()})
    req.id = 1000
    send_frame(client.sock, req.SerializeToString())
    say(sent=True)
    client.sock.settimeout(60)
    msg = wire.ServerMessage()
    msg.ParseFromString(recv_frame(client.sock))
    say(t=time.monotonic(), **(error_of(msg.response) or {"handle": msg.response.handle.handle}))


def sign_on_go(module, count):
    client = Client(SOCKET)
    handle = session_key(client, module)
    say(ready=True)
    sys.stdin.readline()
    times = []
    for _ in range(count):
        resp = client.call(sign_request(module, handle))
        if error_of(resp):
            raise RuntimeError(f"Sign: {error_of(resp)}")
        times.append(time.monotonic())
    say(times=times)


def load_token(module, token_hash, passphrase_file):
    with open(passphrase_file, "rb") as f:
        passphrase = f.read().rstrip(b"\n")
    t0 = time.monotonic()
    resp = Client(SOCKET).call(request(load_token={
        "module": module, "token_hash": token_hash, "passphrase": passphrase}))
    took = time.monotonic() - t0
    say(seconds=took, **(error_of(resp) or {"handle": resp.handle.handle}))


def main(argv):
    action, module, *rest = argv
    module = int(module)
    if action == "fill":
        fill(module, rest[0])
    elif action == "load-key":
        load_key(module, rest[0])
    elif action == "flood":
        flood(module, int(rest[0]))
    elif action == "victim-ops":
        victim_ops(module)
    elif action == "guess":
        guess(module, bytes.fromhex(rest[0]), int(rest[1]), rest[2])
    elif action == "hammer":
        hammer(module, bytes.fromhex(rest[0]), rest[1])
    elif action == "slow-guess":
        slow_guess(module, bytes.fromhex(rest[0]), rest[1])
    elif action == "sign-on-go":
        sign_on_go(module, int(rest[0]))
    elif action == "load-token":
        load_token(module, bytes.fromhex(rest[0]), rest[1])
    else:
        raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    main(sys.argv[1:])
