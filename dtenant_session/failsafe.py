"""When a tenant's daemon cannot start: tell its user why, on the user's own socket.

docker@USER.service has OnFailure=dtenant-daemon-failed@USER.service, which runs this.
It takes the socket over from docker@USER.socket and answers every Docker API request
with an error that says what happened and what to do (the docker CLI prints it as
"Error response from daemon: ..."); /_ping succeeds so that the CLI gets that far. After
a while, or when the administrator provisions the tenant again, it hands the socket back
to systemd, and the next command starts the daemon again. Standard library only.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import sys
import time

from dtenant_session import command, paths
from dtenant_session.tenant import unit_instance

RETRY_AFTER = 300.0  # seconds before the daemon is tried again
MAX_LINE = 65536
REASON_MARKERS = ("refusing to start", "level=fatal", "failed to start daemon",
                  "unable to configure the Docker daemon", "Error starting daemon")  # fmt: skip


def failure_reason(journal: str) -> str:
    """The line that says why the daemon did not start (pure)."""
    lines = [line.strip() for line in journal.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(marker in line for marker in REASON_MARKERS):
            return line.split('msg="', 1)[-1].rstrip('"') if 'msg="' in line else line
    return lines[-1] if lines else "no reason was logged"


def message(user: str, reason: str, retry_at: float) -> str:
    minutes = max(1, round((retry_at - time.time()) / 60))
    return (
        f"dtenant: your Docker daemon cannot start: {reason}. Your images, containers and "
        f"volumes are untouched. Ask your administrator: `dtenant status {user}` and "
        f"`journalctl -u docker@{unit_instance(user)}` show why. It will be tried again in "
        f"{minutes} min."
    )


def _reply(connection: socket.socket, text: str) -> None:
    reader = connection.makefile("rb")
    request_line = reader.readline(MAX_LINE).decode("latin-1")
    length = 0
    while (line := reader.readline(MAX_LINE)) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length" and value.strip().isdigit():
            length = int(value)
    reader.read(length)
    path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else ""
    if path.rstrip("/").endswith("/_ping"):
        status, body, kind = "200 OK", b"OK", "text/plain"
    else:
        status, body = "500 Internal Server Error", json.dumps({"message": text}).encode()
        kind = "application/json"
    connection.sendall(
        f"HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nOstype: linux\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def serve(user: str, retry_after: float = RETRY_AFTER) -> None:
    instance = unit_instance(user)
    systemctl, journalctl = command.which("systemctl"), command.which("journalctl")
    journal = command.run([journalctl, "-u", f"docker@{instance}.service", "-n", "40",
                           "-o", "cat", "--no-pager"], check=False).stdout  # fmt: skip
    reason = failure_reason(journal)
    path = paths.socket_path(user)
    command.run([systemctl, "stop", f"docker@{instance}.socket"])
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.exists(path):
            os.unlink(path)
        listener.bind(path)
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, 0)
        os.chmod(path, 0o600)
        listener.listen(16)
        listener.settimeout(5.0)
        retry_at = time.time() + retry_after
        while time.time() < retry_at:
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5.0)
                try:
                    _reply(connection, message(user, reason, retry_at))
                except OSError:
                    continue
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)
        command.run([systemctl, "reset-failed", f"docker@{instance}.service"], check=False)
        command.run([systemctl, "start", f"docker@{instance}.socket"], check=False)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: daemon-failed USER", file=sys.stderr)
        return 2
    serve(argv[0])
    return 0
