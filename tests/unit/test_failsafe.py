"""The failure explainer's request handling: whatever a client sends or declares, a few
KiB read, an answer in bounded time, and the next client served."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from dtenant_session import failsafe

TEXT = "dtenant: your Docker daemon cannot start: test"


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    client, server = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with client, server:
        yield client, server


def _reply(client: socket.socket) -> bytes:
    client.settimeout(5)
    data = b""
    with contextlib.suppress(OSError):
        while chunk := client.recv(65536):
            data += chunk
    return data


def _feed(client: socket.socket, data: bytes, pause: float = 0.0) -> threading.Thread:
    """Send data from a thread (a byte at a time with pause, if given), ignoring a
    server that stopped reading."""

    def send() -> None:
        with contextlib.suppress(OSError):
            if pause:
                for byte in data:
                    client.sendall(bytes([byte]))
                    time.sleep(pause)
            else:
                client.sendall(data)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_ping_succeeds_and_everything_else_explains(pair: tuple[socket.socket, ...]) -> None:
    client, server = pair
    client.sendall(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n")
    failsafe.handle(server, TEXT)
    server.shutdown(socket.SHUT_WR)
    assert _reply(client).startswith(b"HTTP/1.1 200 OK")
    assert failsafe.answer("/v1.41/containers/json?all=1", TEXT).startswith(b"HTTP/1.1 500")
    assert b"cannot start: test" in failsafe.answer("/v1.41/containers/json", TEXT)
    assert failsafe.answer("/v1.41/_ping?x=1", TEXT).startswith(b"HTTP/1.1 200")


def test_an_absurd_content_length_and_a_large_body(pair: tuple[socket.socket, ...]) -> None:
    """The report: Content-Length 10^12 (or 5,000 digits) made it buffer or crash."""
    client, server = pair
    head = b"POST /v1.41/containers/create HTTP/1.1\r\nContent-Length: 1000000000000\r\n\r\n"
    _feed(client, head + b"x" * (50 << 20))
    tracemalloc.start()
    try:
        started = time.monotonic()
        failsafe.handle(server, TEXT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < failsafe.CONNECTION_SECONDS
    assert peak < 256 << 10, peak
    server.shutdown(socket.SHUT_WR)
    assert b"cannot start: test" in _reply(client)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /x HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n",
        b"POST /x HTTP/1.1\r\nContent-Length: -5\r\nContent-Length: 1e9\r\n\r\n",
        b"\xff\xfe\x00garbage without any line end" * 2000,
        b"GET\r\n\r\n",
        b"",
    ],
)
def test_nonsense_is_survived(pair: tuple[socket.socket, ...], request_bytes: bytes) -> None:
    client, server = pair
    _feed(client, request_bytes)
    if not request_bytes:
        client.shutdown(socket.SHUT_WR)
    failsafe.handle(server, TEXT, seconds=1.0)  # must not raise


def test_a_slow_client_is_dropped_in_time(pair: tuple[socket.socket, ...]) -> None:
    """slowloris: a byte every 50 ms would keep a per-read timeout happy for ever."""
    client, server = pair
    _feed(client, b"GET /v1.41/info HTTP/1.1\r\nX-Slow: " + b"a" * 1000 + b"\r\n\r\n", 0.05)
    started = time.monotonic()
    failsafe.handle(server, TEXT, seconds=0.5)
    assert time.monotonic() - started < 1.0


def test_a_header_without_end_is_cut_at_the_limit(pair: tuple[socket.socket, ...]) -> None:
    client, server = pair
    _feed(client, b"GET /v1.41/info HTTP/1.1\r\nX-Long: " + b"a" * (10 << 20))
    tracemalloc.start()
    try:
        failsafe.handle(server, TEXT, seconds=2.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 256 << 10, peak


def test_content_length_parsing() -> None:
    assert failsafe.content_length(" 42 ") == 42
    assert failsafe.content_length("9" * 5000) == 10**18
    assert failsafe.content_length("-1") == 0
    assert failsafe.content_length("") == 0


@pytest.mark.parametrize(
    ("journal", "reason"),
    [
        # The pre-start check could not read what it needs: its line, not systemd's last.
        ("dtenant: cannot check bob's data-root: cannot read the registry: disk I/O error\n"
         "docker@bob.service: Control process exited, code=exited, status=1/FAILURE\n"
         "dtenant: stopped 0 container(s) left without their daemon\n"
         "docker@bob.service: Start request repeated too quickly.\n"
         "docker@bob.service: Triggering OnFailure= dependencies.\n",
         "dtenant: cannot check bob's data-root: cannot read the registry: disk I/O error"),
        ('time="x" level=fatal msg="mkdir /var/lib/x/tmp: no space left on device"\n'
         "docker@bob.service: Triggering OnFailure= dependencies.\n",
         "mkdir /var/lib/x/tmp: no space left on device"),
    ],
)  # fmt: skip
def test_the_reason_is_the_line_that_says_why(journal: str, reason: str) -> None:
    assert failsafe.failure_reason(journal) == reason


def test_a_lack_of_space_ends_the_back_off_when_there_is_room() -> None:
    assert failsafe.lacks_space("mkdir /x/tmp: no space left on device")
    assert failsafe.lacks_space("cannot read the registry: disk I/O error")
    assert not failsafe.lacks_space("daemon.json: invalid character")
    gib = (1 << 30) // 4096  # blocks of 4 KiB
    assert not failsafe.has_room(0, 10 * gib, 5000, 100_000)
    assert not failsafe.has_room(gib, 10 * gib, 0, 100_000)  # no inode left
    assert failsafe.has_room(gib, 10 * gib, 5000, 100_000)
    assert failsafe.has_room(gib, 10 * gib, 0, 0)  # no inode counts (btrfs)
    text = failsafe.message("bob", "no space left on device", time.time() + 300)
    assert "as soon as there is space again" in text


@pytest.mark.parametrize(
    ("journal", "expected"),
    [("Starting docker@alice.service - Docker daemon of alice (dtenant)...\n"
      "Started docker@alice.service - Docker daemon of alice (dtenant).\n"
      "Stopping docker@alice.service - Docker daemon of alice (dtenant)...\n"
      "docker@alice.service: Control process exited, code=killed, status=9/KILL\n"
      "docker@alice.service: Triggering OnFailure= dependencies.\n", True),
     ("Started docker@alice.service - ...\nStarting docker@alice.service - ...\n"
      "dtenant: refusing to start: the data-root is locked by pid 7\n"
      "Failed to start docker@alice.service - ...\n", False),
     ("time=\"...\" level=info msg=\"Starting up\"\n", False),
     ("", False)],
)  # fmt: skip
def test_a_daemon_that_started_and_failed_later_is_no_refusal(journal: str, expected: bool) -> None:
    """A failure during a stop (say, a kill racing a new connection) locks nobody out."""
    assert failsafe.started_then_failed(journal) is expected
