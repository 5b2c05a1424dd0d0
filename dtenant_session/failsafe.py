"""When a tenant's daemon cannot start: tell its user why, on the user's own socket.

docker@USER.service has OnFailure=dtenant-daemon-failed@USER.service, which runs this.
It takes the socket over from docker@USER.socket and answers every Docker API request
with an error that says what happened and what to do (the docker CLI prints it as
"Error response from daemon: ..."); /_ping succeeds so that the CLI gets that far. After
a while, when the administrator provisions the tenant again, or (a start refused for
lack of space) as soon as there is room again, it hands the socket back to systemd, and
the next command starts the daemon again. Standard library only.
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
# One connection at a time, each within CONNECTION_SECONDS and read up to MAX_HEAD +
# MAX_DISCARD bytes, CHUNK at a time: nothing a client does holds memory or the socket.
CONNECTION_SECONDS = 5.0
MAX_HEAD = 16384
MAX_DISCARD = 1 << 20
CHUNK = 4096
REASON_MARKERS = ("refusing to start", "cannot check", "level=fatal", "failed to start daemon",
                  "unable to configure the Docker daemon", "Error starting daemon")  # fmt: skip
# A reason that is a lack of space ends the back-off as soon as there is room again.
NO_SPACE = ("no space left", "disk i/o error", "database or disk is full", "disk quota exceeded")
ROOM_EVERY = 2.0  # seconds between looks at the free space


def failure_reason(journal: str) -> str:
    """The line that says why the daemon did not start (pure)."""
    lines = [line.strip() for line in journal.splitlines() if line.strip()]
    for line in reversed(lines):
        if any(marker in line for marker in REASON_MARKERS):
            return line.split('msg="', 1)[-1].rstrip('"') if 'msg="' in line else line
    return lines[-1] if lines else "no reason was logged"


def lacks_space(reason: str) -> bool:
    """The daemon could not start for lack of space (pure)."""
    return any(words in reason.lower() for words in NO_SPACE)


def has_room(free_blocks: int, blocks: int, free_inodes: int, inodes: int) -> bool:
    """A filesystem has room again: 1% of it or 64 MiB worth of 4 KiB blocks, and 1% of its
    inodes or 1,000 (filesystems without inode counts report 0) (pure)."""
    blocks_wanted = min(blocks // 100, (64 << 20) // 4096)
    inodes_wanted = min(inodes // 100, 1000)
    return free_blocks > blocks_wanted and (inodes == 0 or free_inodes > inodes_wanted)


def room_again(user: str) -> bool:
    """Every filesystem the daemon writes to (its state, data-root, exec-root) has room."""
    places = (paths.STATE_DIR, f"{paths.TENANTS_DIR}/{user}/docker", paths.RUN_TENANTS_DIR)
    for place in places:
        try:
            room = os.statvfs(place)
        except OSError:
            continue
        scale = max(1, room.f_frsize // 4096)
        if not has_room(room.f_bavail * scale, room.f_blocks * scale, room.f_favail,
                        room.f_files):  # fmt: skip
            return False
    return True


def started_then_failed(journal: str) -> bool:
    """Whether the daemon's last start succeeded and it failed only later, while it ran or
    stopped (a stop racing a new connection, a kill): nothing stops it from starting again,
    so nobody is locked out or told it cannot start (pure). systemd logs "Starting UNIT"
    and, once it is up, "Started UNIT"."""
    for line in reversed(journal.splitlines()):
        if line.startswith("Started docker@"):
            return True
        if line.startswith("Starting docker@"):
            return False
    return False


def message(user: str, reason: str, retry_at: float) -> str:
    minutes = max(1, round((retry_at - time.time()) / 60))
    when = f"in {minutes} min"
    if lacks_space(reason):
        when = f"as soon as there is space again (at the latest {when})"
    return (
        f"dtenant: your Docker daemon cannot start: {reason}. Your images, containers and "
        f"volumes are untouched. Ask your administrator: `dtenant status {user}` and "
        f"`journalctl -u docker@{unit_instance(user)}` show why. It will be tried again "
        f"{when}."
    )


def _head(connection: socket.socket, deadline: float) -> tuple[bytes, bytes]:
    """The request line and headers (at most MAX_HEAD bytes), and what came after them."""
    buffer = b""
    while len(buffer) <= MAX_HEAD:
        for end in (b"\r\n\r\n", b"\n\n"):
            if end in buffer:
                head, _, rest = buffer.partition(end)
                return head, rest
        chunk = _receive(connection, deadline, CHUNK)
        if not chunk:
            break
        buffer += chunk
    return buffer[:MAX_HEAD], b""


def _receive(connection: socket.socket, deadline: float, size: int) -> bytes:
    """One recv within what is left of the connection's time (TimeoutError after it)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the connection took too long")
    connection.settimeout(left)
    return connection.recv(size)


def content_length(value: str) -> int:
    """A Content-Length as a number; absurd ones are just large (pure)."""
    value = value.strip()
    if not value.isdigit():
        return 0
    return int(value) if len(value) <= 18 else 10**18


def read_request(connection: socket.socket, deadline: float) -> str:
    """The request's path, having read at most MAX_HEAD + MAX_DISCARD bytes of it, in
    CHUNK-sized pieces, all before deadline: whatever a client sends or declares, this
    holds a few KiB and returns in time. The rest of a body is left unread."""
    head, rest = _head(connection, deadline)
    lines = head.decode("latin-1").splitlines()
    request_line = lines[0] if lines else ""
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = content_length(value)
    unread = min(length, MAX_DISCARD) - len(rest)
    while unread > 0 and (chunk := _receive(connection, deadline, min(CHUNK, unread))):
        unread -= len(chunk)
    words = request_line.split(" ")
    return words[1] if len(words) >= 3 else ""


def answer(path: str, text: str) -> bytes:
    """The whole HTTP response to a request for path (pure)."""
    if path.split("?", 1)[0].rstrip("/").endswith("/_ping"):
        status, body, kind = "200 OK", b"OK", "text/plain"
    else:
        status, body = "500 Internal Server Error", json.dumps({"message": text}).encode()
        kind = "application/json"
    return (
        f"HTTP/1.1 {status}\r\nApi-Version: 1.41\r\nOstype: linux\r\nContent-Type: {kind}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def handle(connection: socket.socket, text: str, seconds: float = CONNECTION_SECONDS) -> None:
    """One connection, start to end within `seconds`; any failure drops it alone."""
    deadline = time.monotonic() + seconds
    try:
        path = read_request(connection, deadline)
        connection.settimeout(max(0.1, deadline - time.monotonic()))
        connection.sendall(answer(path, text))
    except Exception:  # noqa: BLE001 - a client that times out, hangs up or sends nonsense
        return  # is dropped alone: the explainer stays for the next one


def serve(user: str, retry_after: float = RETRY_AFTER) -> None:
    instance = unit_instance(user)
    systemctl, journalctl = command.which("systemctl"), command.which("journalctl")
    journal = command.run([journalctl, "-u", f"docker@{instance}.service", "-n", "200",
                           "-o", "cat", "--no-pager"], check=False).stdout  # fmt: skip
    if started_then_failed(journal):
        command.run([systemctl, "reset-failed", f"docker@{instance}.service"], check=False)
        command.run([systemctl, "start", f"docker@{instance}.socket"], check=False)
        return
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
        retry_at = time.time() + retry_after
        space = lacks_space(reason)
        looked = 0.0
        listener.settimeout(ROOM_EVERY if space else 5.0)
        while time.time() < retry_at:
            if space and time.monotonic() - looked >= ROOM_EVERY:
                looked = time.monotonic()
                if room_again(user):
                    break  # the next command starts the daemon again
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # a client gone before it was accepted, descriptors short
                time.sleep(0.1)
                continue
            with connection:
                handle(connection, message(user, reason, retry_at))
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
