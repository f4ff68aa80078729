"""A fake HSM service, as another local user would run one at a path a
victim's client may use: it speaks just enough of the wire protocol for the
client to go on (Hello, one usable module, the token and key the client asks
for, a handle for every load) and appends every request it receives, as
"NAME HEX-OF-THE-WHOLE-REQUEST", to LOG.

  fake_service.py SOCKET LOG [TOKEN-NAME]

Prints "listening" on stdout once bound, then serves until killed."""

import os
import socket
import sys
import threading

from wire_client import PROTOCOL_VERSION, recv_frame, send_frame, wire

path, log_path = sys.argv[1], sys.argv[2]
token_name = sys.argv[3] if len(sys.argv) > 3 else "mycard"
lock = threading.Lock()
TOKEN_HASH = bytes(range(20))


def record(request):
    with lock, open(log_path, "a") as f:
        f.write(f"{request.WhichOneof('body')} {request.SerializeToString().hex()}\n")


def answer(request):
    resp = wire.Response(id=request.id)
    body = request.WhichOneof("body")
    if body == "hello":
        resp.hello.version = PROTOCOL_VERSION
        resp.hello.instance = bytes(16)
        resp.hello.server = "hsmsim 0.1.0"
        resp.hello.world_id = b"\x01" * 16
    elif body == "get_world":
        resp.world.world_id = b"\x01" * 16
        resp.world.modules = 1
    elif body in ("list_modules", "subscribe"):
        resp.modules.modules.add(number=1, esn="FAKE-0000-0001", state=wire.MODULE_USABLE)
    elif body == "list_tokens":
        resp.tokens.tokens.add(type=wire.TOKEN_SOFTCARD, name=token_name, hash=TOKEN_HASH)
    elif body == "list_keys":
        resp.keys.SetInParent()
    elif body in ("load_token", "load_key"):
        resp.handle.handle = 7
    else:
        resp.ok.SetInParent()
    return resp


def serve(conn):
    try:
        while True:
            request = wire.Request()
            request.ParseFromString(recv_frame(conn))
            record(request)
            msg = wire.ServerMessage()
            msg.response.CopyFrom(answer(request))
            send_frame(conn, msg.SerializeToString())
            if request.WhichOneof("body") == "subscribe":
                threading.Event().wait()  # an event stream that stays quiet
    except (EOFError, OSError, ValueError):
        pass
    finally:
        conn.close()


listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(path)
os.chmod(path, 0o777)  # anyone may connect: that is the trap
listener.listen(16)
print("listening", flush=True)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
