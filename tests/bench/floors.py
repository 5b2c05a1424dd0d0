"""The floors dtenant's per-request cost is measured against, run in a lab (stdlib only).

`python3 floors.py plugin PATH`: a no-op authorization plugin on PATH, the protocol's own
floor: it answers every call allowed over keep-alive HTTP/1.1 and does nothing else, so a
daemon using it pays only for handing each request and response to a plugin.
`python3 floors.py plugin-fd`: the same on the socket systemd passes (fd 3), in place of
a tenant's own plugin (a drop-in for dtenant-authz@USER.service).

`python3 floors.py proxy LISTEN UPSTREAM`: a pass-through proxy on LISTEN in front of a
daemon's socket, the floor of the other design issue 17 asks about (a filtering proxy on
the user's socket): it reads each request's head and body framing, as a filter must, and
forwards; responses are copied back unread.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable

RECEIVE = 64 << 10
SD_LISTEN_FDS_START = 3
ALLOW = b'{"Allow":true}'
ACTIVATE = b'{"Implements":["authz"]}'


def _listen(path: str) -> socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    os.chmod(path, 0o660)
    listener.listen(128)
    return listener


def _serve(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=handle, args=(connection,), daemon=True).start()


class Buffered:
    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = bytearray()

    def head(self) -> bytes | None:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            chunk = self.connection.recv(RECEIVE)
            if not chunk:
                return None
            self.buffer += chunk
        head = bytes(self.buffer[: end + 4])
        del self.buffer[: end + 4]
        return head

    def take(self, length: int) -> bytes | None:
        while len(self.buffer) < length:
            chunk = self.connection.recv(RECEIVE)
            if not chunk:
                return None
            self.buffer += chunk
        data = bytes(self.buffer[:length])
        del self.buffer[:length]
        return data


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _reply(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\n" \
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)  # fmt: skip


def plugin_connection(connection: socket.socket) -> None:
    requests = Buffered(connection)
    with connection:
        while (head := requests.head()) is not None:
            if requests.take(_length(head)) is None:
                return
            activate = head.startswith(b"POST /Plugin.Activate")
            connection.sendall(_reply(ACTIVATE if activate else ALLOW))


def proxy_connection(client: socket.socket, upstream_path: str) -> None:
    """Requests with a length or none are forwarded one by one; anything else (chunked
    bodies, upgraded streams) is piped on unread, as a real filter would after checking."""
    upstream = socket.socket(socket.AF_UNIX)
    upstream.connect(upstream_path)
    threading.Thread(target=_copy, args=(upstream, client), daemon=True).start()
    requests = Buffered(client)
    try:
        while (head := requests.head()) is not None:
            lowered = head.lower()
            if b"transfer-encoding" in lowered or b"upgrade:" in lowered:
                upstream.sendall(head + bytes(requests.buffer))
                _copy(client, upstream)
                return
            body = requests.take(_length(head))
            if body is None:
                return
            upstream.sendall(head + body)
    finally:
        upstream.close()
        client.close()


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while chunk := source.recv(RECEIVE):
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def main(argv: list[str]) -> None:
    if argv[:1] == ["plugin"] and len(argv) == 2:
        _serve(_listen(argv[1]), plugin_connection)
    elif argv == ["plugin-fd"]:
        _serve(socket.socket(fileno=SD_LISTEN_FDS_START), plugin_connection)
    elif argv[:1] == ["proxy"] and len(argv) == 3:
        upstream = argv[2]
        _serve(_listen(argv[1]), lambda connection: proxy_connection(connection, upstream))
    else:
        raise SystemExit("usage: floors.py plugin PATH | plugin-fd | proxy LISTEN UPSTREAM")


if __name__ == "__main__":
    main(sys.argv[1:])
