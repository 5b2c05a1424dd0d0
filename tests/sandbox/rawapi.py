"""Raw Docker API requests over the caller's own socket, for the policy tests.

Run as a tenant (over SSH): `python3 rawapi.py CASE`; prints the HTTP status and body.
Each case is a way the docker CLI would never send a request, but an attacker could.
"""

from __future__ import annotations

import os
import socket
import sys

PRIVILEGED = b'{"Image": "dtenant/busybox", "HostConfig": {"Privileged": true}}'
CASES = {
    "lowercase": ("application/json", b'{"image": "dtenant/busybox", "hostconfig": '
                  b'{"privileged": true}}', "length"),
    "duplicate": ("application/json", b'{"Image": "dtenant/busybox", "HostConfig": '
                  b'{"Privileged": false, "Privileged": true}}', "length"),
    "charset": ("application/json; charset=utf-8", PRIVILEGED, "length"),
    "chunked": ("application/json", PRIVILEGED, "chunked"),
    "zero-length": ("application/json", b"", "length"),
    "lowercase-bind": ("application/json", b'{"image": "dtenant/busybox", "hostconfig": '
                       b'{"binds": ["/:/host"]}}', "length"),
    "deep": ("application/json", b'{"Image": "dtenant/busybox", "Labels": ' + b"[" * 100_000
             + b"]" * 100_000 + b"}", "length"),
    "text-plain": ("text/plain", PRIVILEGED, "length"),
}  # fmt: skip
# Other endpoints: (method, path) for a case named "METHOD:PATH:FRAMING" on the command
# line, with a small JSON body.
OTHER_BODY = b'{"Container": "x", "EndpointConfig": {}}'


def send(case: str) -> str:
    method, uri = "POST", "/v1.41/containers/create"
    if case.count(":") == 2:
        method, uri, framing = case.split(":")
        content_type, body = "application/json", OTHER_BODY
    else:
        content_type, body, framing = CASES[case]
    path = f"/run/docker-{os.environ['USER']}.sock"
    head = (f"{method} {uri} HTTP/1.1\r\nHost: docker\r\n"
            f"Content-Type: {content_type}\r\nConnection: close\r\n")  # fmt: skip
    if framing == "big":  # over 1 MiB: the daemon shows the plugin no body at all
        body = body[:-1] + b', "Pad": "' + b"x" * (1 << 20) + b'"}'
        framing = "length"
    if framing == "none":
        payload = (head + "\r\n").encode()
    elif framing == "chunked":
        payload = (head + "Transfer-Encoding: chunked\r\n\r\n").encode()
        payload += f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    else:
        payload = (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(path)
        try:
            connection.sendall(payload)
        except BrokenPipeError:
            pass  # the daemon answered (refused) before reading the whole body
        reply = b""
        try:
            while chunk := connection.recv(65536):
                reply += chunk
        except ConnectionResetError:
            pass
    headers, _, content = reply.partition(b"\r\n\r\n")
    status = headers.split(b"\r\n", 1)[0].decode()
    return status + "\n" + content.decode(errors="replace")


if __name__ == "__main__":
    print(send(sys.argv[1]))
