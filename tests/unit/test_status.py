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


def test_a_low_disk_names_the_largest_data_roots() -> None:
    rows = [_row("small", 10 << 20), _row("big", 900 << 20), _row("unmeasured", None)]
    assert status.space_note(status.Room(50 << 30, 100 << 30), rows) == ""
    note = status.space_note(status.Room(0, 1 << 30), rows)
    assert note.startswith("/var/lib/dtenant is full: 0B free of 1.0G")
    assert note.endswith("largest data-roots: big 900.0M, small 10.0M")
    assert "not measured yet" in status.space_note(status.Room(1, 1 << 30), rows[2:])


def _row(user: str, size: int | None) -> status.TenantStatus:
    return status.TenantStatus(user, 1000, 1, "", "", "", "", "", "", None, None, size, None,
                               None, "")  # fmt: skip


def test_a_capped_tenant_shows_its_use_of_its_disk() -> None:
    capped = status.TenantStatus("c", 1000, 1, "", "", "", "", "", "", None, None, None, None,
                                 None, "", disk=(3 << 30, 20 << 30))  # fmt: skip
    unmounted = status.TenantStatus("u", 1000, 1, "", "", "", "", "", "", None, None, None,
                                    None, None, "", disk=(None, 20 << 30))  # fmt: skip
    text = status.table([capped, unmounted])
    assert text.splitlines()[1].endswith("3.0G/20.0G")
    assert text.splitlines()[2].endswith("unmounted/20.0G")
