"""The hsmsim wire protocol from Python, for tests that act as a client or a
server the way another local user could: frames (4-byte big-endian length)
carrying the protobuf messages of src/wire/wire.proto, through the module
protoc generates in the build tree (directory WIRE_PB2_DIR)."""

import os
import socket
import struct
import sys

_dir = os.environ.get("WIRE_PB2_DIR")
if not _dir:
    raise RuntimeError("WIRE_PB2_DIR is not set: run these tests through ctest")
sys.path.insert(0, _dir)
import wire_pb2 as wire  # noqa: E402,F401

MAX_FRAME = 1024 * 1024
PROTOCOL_VERSION = 4  # kProtocolVersion in src/wire/include/wire/codec.hpp


def send_frame(sock, payload):
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed")
        data += chunk
    return data


def recv_frame(sock):
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    return recv_exact(sock, n)


class Client:
    """One connection to a service: Hello, then call(request) -> Response."""

    def __init__(self, path, timeout=60.0, name="wire_client"):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.next_id = 0
        req = wire.Request()
        req.hello.version = PROTOCOL_VERSION
        req.hello.client = name
        self.hello = self.call(req)

    def call(self, request):
        self.next_id += 1
        request.id = self.next_id
        send_frame(self.sock, request.SerializeToString())
        msg = wire.ServerMessage()
        msg.ParseFromString(recv_frame(self.sock))
        return msg.response

    def close(self):
        self.sock.close()
