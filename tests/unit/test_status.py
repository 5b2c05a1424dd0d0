"""What `dtenant status` and the reaper ask a running daemon."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import dockerapi, log, paths, status
from dtenant_session.registry import Allocation

ALICE = Allocation("alice", 1000, 3, "10.96.2.0/24", "10.128.32.0/20", 0.0, "/home/alice")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A daemon that answers /info only, and records what it was asked."""
    asked: list[str] = []
    path = str(tmp_path / "docker.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    monkeypatch.setattr(paths, "socket_path", lambda user: path)
    monkeypatch.setattr(log, "log", lambda *a, **k: None)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                head = connection.recv(65536).decode()
                line = head.split("\r\n", 1)[0]
                agents = [h for h in head.split("\r\n") if h.lower().startswith("user-agent")]
                asked.append(" ".join([line, *agents]))
                found = "/info " in line
                body = json.dumps({"Containers": 40, "ContainersRunning": 37}).encode()
                head_out = "HTTP/1.1 200 OK" if found else "HTTP/1.1 404 Not Found"
                connection.sendall(f"{head_out}\r\nContent-Length: {len(body)}\r\n"
                                   "Connection: close\r\n\r\n".encode() + body)  # fmt: skip

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield asked
    listener.close()


def test_running_containers_are_counted_from_the_summary(daemon: list[str]) -> None:
    """Never the list of every container's JSON: a tenant's labels can make it large."""
    assert status.running_containers(ALICE) == 37
    assert len(daemon) == 1 and daemon[0].startswith("GET /info HTTP/1.1")
    assert dockerapi.REAPER_AGENT in daemon[0]  # not the tenant's activity


def test_a_count_the_daemon_does_not_give_is_unknown(
    daemon: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dockerapi, "get", lambda *a, **k: b'{"ContainersRunning": "many"}')
    assert status.running_containers(ALICE) is None
