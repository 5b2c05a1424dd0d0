"""GET requests of root's own to a tenant's daemon, on the tenant's socket (stdlib only).

Sent with the reaper's user agent, so the authorization plugin does not count them as
the tenant's activity. The answer is read up to a bound: a daemon is the tenant's.

Not http.client: it loads ssl (libcrypto) and the email package, ~5 MiB of the
authorization plugin's memory, for one GET that closes its connection. What is spoken
here is HTTP/1.1 with `Connection: close`, the answer framed by Content-Length, chunks or
the end of the connection.
"""

from __future__ import annotations

import socket

from dtenant_session import paths

REAPER_AGENT = "dtenant-reaper"
MAX_ANSWER = 8 << 20
MAX_HEAD = 64 << 10


class BadAnswer(ValueError):
    pass


def get(user: str, path: str, *, timeout: float = 10.0, agent: str = REAPER_AGENT) -> bytes:
    """The body of a 200 answer to GET path; OSError naming what went wrong otherwise."""
    request = (f"GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: {agent}\r\n"
               "Connection: close\r\n\r\n").encode("latin-1")  # fmt: skip
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(timeout)
            connection.connect(paths.socket_path(user))
            connection.sendall(request)
            raw = receive_all(connection, MAX_HEAD + MAX_ANSWER)
        status, body = parse_answer(raw)
    except (OSError, BadAnswer) as exc:
        raise OSError(f"the daemon did not answer: {exc}") from None
    if status != 200:
        raise OSError(f"the daemon answered {status}")
    return body


def receive_all(connection: socket.socket, limit: int) -> bytes:
    """Everything until the daemon closes, BadAnswer beyond limit bytes."""
    chunks, size = [], 0
    while chunk := connection.recv(256 << 10):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BadAnswer(f"an answer over {limit} bytes")
    return b"".join(chunks)


def parse_answer(raw: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.x answer read until the connection's end."""
    head, found, rest = raw.partition(b"\r\n\r\n")
    if not found:
        raise BadAnswer("an answer without the end of its head")
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadAnswer(f"a status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise BadAnswer(f"a header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return int(parts[1]), dechunk(rest)
    length = headers.get(b"content-length")
    if length is None:
        return int(parts[1]), rest
    if not length.isdigit() or int(length) > len(rest):
        raise BadAnswer(f"a body shorter than its Content-Length {length[:20]!r}")
    return int(parts[1]), rest[: int(length)]


def dechunk(data: bytes) -> bytes:
    """A chunked body's data (trailers ignored), BadAnswer when it is cut short."""
    body, at = bytearray(), 0
    while True:
        end = data.find(b"\r\n", at)
        size_field = data[at:end].split(b";", 1)[0].strip() if end >= 0 else b""
        try:
            size = int(size_field, 16)
        except ValueError:
            raise BadAnswer(f"a chunk size {size_field[:20]!r}") from None
        if size == 0:
            return bytes(body)
        start = end + 2
        if size < 0 or start + size + 2 > len(data):
            raise BadAnswer("a chunked body cut short")
        body += data[start : start + size]
        at = start + size + 2


def info_count(user: str, key: str, *, timeout: float = 10.0, agent: str = REAPER_AGENT) -> int:
    """A count from the daemon's summary (`Containers`, `ContainersRunning`, `Images`):
    one small answer, where listing would fetch every container's JSON (a tenant's labels
    can make that large). OSError naming what went wrong otherwise."""
    (count,) = info_counts(user, [key], timeout=timeout, agent=agent)
    return count


def info_counts(user: str, keys: list[str], *, timeout: float = 10.0,
                agent: str = REAPER_AGENT) -> list[int]:  # fmt: skip
    """Several counts from one answer of the daemon's summary (info_count)."""
    import json

    try:
        summary = json.loads(get(user, "/info", timeout=timeout, agent=agent))
    except ValueError as exc:
        raise OSError(f"the daemon's /info is no JSON ({exc})") from None
    counts = []
    for key in keys:
        try:
            count = summary[key]
        except (KeyError, TypeError) as exc:
            raise OSError(f"the daemon's /info has no {key} ({exc})") from None
        if not isinstance(count, int) or isinstance(count, bool):
            raise OSError(f"the daemon's /info has no {key} (it says {count!r})")
        counts.append(count)
    return counts
