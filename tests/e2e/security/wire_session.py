"""One wire session, run as another local user by the attacker tests.

    python3 wire_session.py SOCKET

connects to SOCKET (Hello first, see wire_client.Client), then reads
requests on stdin, one a line as the JSON form of wire.Request
(google.protobuf.json_format, bytes in base64), and writes each response
as one JSON line. The connection stays open until stdin ends, so whatever
it loaded stays loaded until then.
"""

import sys

from google.protobuf import json_format

from wire_client import Client, wire


def main():
    client = Client(sys.argv[1], name="wire_session")
    for line in sys.stdin:
        if not line.strip():
            continue
        response = client.call(json_format.Parse(line, wire.Request()))
        print(json_format.MessageToJson(response, indent=None,
                                        preserving_proto_field_name=True), flush=True)


if __name__ == "__main__":
    main()
