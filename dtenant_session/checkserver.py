"""The pre-start check, served warm by dtenant-check.service to check-tenant, the static
program each tenant daemon runs before it starts (ExecStartPre).

In a fresh interpreter the check costs ~40 ms before every daemon start, nearly all of it
the interpreter, its imports and nft's start; here those are paid once, and a start waits
only for the check's own work. The checks are the same (prestart.verdict) and run when
the client asks, right before the start: nothing is kept from one check to the next.

check-tenant (packaging/libexec/check-tenant.c) probes the daemon's traffic filter itself,
from the daemon's cgroup (only a socket made there shows whether the filter holds for
it), and runs the check in a process of its own (check-tenant-direct) when the probe
gets through (the table must be loaded again, from that cgroup) or this server does not
answer in time.

Protocol, on /run/dtenant/check.sock (root's alone, and the peer's credentials are
checked too): the client sends a user name and a newline; the server answers with the
exit status on a line of its own, then what the client prints on stderr, and closes.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable

from dtenant_session import activation, log, prestart, tenant

REQUEST_MAX = 64  # a user name (at most 32 characters) and a newline
READ_TIMEOUT = 5.0  # the client sends its request at once
PEER_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid


def answer(request: bytes, pid: int, uid: int, nft: Callable[[str], str | None]
           ) -> tuple[int, str]:  # fmt: skip
    """Exit status and stderr text for a request from process `pid` of `uid`; `nft`
    changes dtenant's nftables table (Nftables)."""
    if uid != 0:
        return 1, f"dtenant: the check server answers root alone, not uid {uid}\n"
    user = request.removesuffix(b"\n").decode("ascii", errors="replace")
    if not request.endswith(b"\n") or not tenant.supported_name(user):
        return 2, f"dtenant: check-tenant: {user!r} is not a user name dtenant handles\n"
    try:
        with open(f"/proc/{pid}/cgroup") as stream:
            proc_cgroup = stream.read()
    except OSError as exc:
        return 1, f"dtenant: cannot check {user}'s daemon: the cgroup of pid {pid}: {exc}\n"
    return prestart.verdict(user, OwnRanges(user, proc_cgroup, nft).opened)


class OwnRanges:
    """Opening the tenant's own ranges to its daemon's slice while the other checks run:
    harmless should they refuse the start."""

    def __init__(self, user: str, proc_cgroup: str, nft: Callable[[str], str | None]) -> None:
        self.findings: list[prestart.Finding] = []
        self._opening = threading.Thread(target=self._open, args=(user, proc_cgroup, nft))
        self._opening.start()

    def _open(self, user: str, proc_cgroup: str, nft: Callable[[str], str | None]) -> None:
        try:
            self.findings = prestart.open_own_ranges(user, proc_cgroup, nft)
        except Exception as exc:  # noqa: BLE001 - whatever it is refuses the start
            self.findings = [prestart.Finding(user, "firewall", f"cannot open its own "
                                              f"ranges to it: {exc}")]  # fmt: skip

    def opened(self, _user: str) -> list[prestart.Finding]:
        self._opening.join()
        return self.findings


def read_request(connection: socket.socket) -> bytes:
    """Up to the first newline, at most REQUEST_MAX bytes."""
    request = b""
    while b"\n" not in request and len(request) < REQUEST_MAX:
        chunk = connection.recv(REQUEST_MAX - len(request))
        if not chunk:
            break
        request += chunk
    return request


class Nftables:
    """dtenant's nftables table through libnftables in this process (python3-nftables):
    no nft process to start (~4 ms) for each check. One context, one call at a time."""

    def __init__(self) -> None:
        import nftables

        self._context = nftables.Nftables()
        self._lock = threading.Lock()

    def __call__(self, script: str) -> str | None:
        with self._lock:
            status, _, error = self._context.cmd(script)
        return None if status == 0 else str(error).strip()


class Handler(socketserver.BaseRequestHandler):
    request: socket.socket
    server: CheckServer

    def handle(self) -> None:
        started = time.monotonic()
        log.decide_again()  # /etc/dtenant/debug made or removed while the server runs
        self.request.settimeout(READ_TIMEOUT)
        credentials = self.request.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, PEER_CREDENTIALS.size
        )
        pid, uid, _ = PEER_CREDENTIALS.unpack(credentials)
        try:
            request = read_request(self.request)
        except OSError:
            return  # the client gave up: it checks in a process of its own
        subject = request.strip().decode("ascii", errors="replace")
        try:
            status, text = answer(request, pid, uid, self.server.nft)
        except Exception as exc:  # noqa: BLE001 - no answer: the client checks by itself
            log.log(f"pre-start check of {subject!r} (pid {pid}) failed in the server, the "
                    f"daemon checks by itself: {exc!r}", priority=log.ERR)  # fmt: skip
            return
        outcome = "allowed" if status == 0 else f"refused: {text.strip()}"
        # What it refused is in the daemon's journal already (the client's stderr).
        log.trace("pre-start check", f"{subject} (pid {pid})", outcome, started,
                  user=subject if status != 2 else None)  # fmt: skip
        try:
            self.request.sendall(f"{status}\n{text}".encode())
        except OSError:
            pass  # as above


class CheckServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True  # a check stuck in a tenant's tree never holds the others up

    def __init__(self, listener: socket.socket) -> None:
        super().__init__("", Handler, bind_and_activate=False)
        self.socket = listener
        self.nft = Nftables()


def main(argv: list[str]) -> int:
    if argv:
        print("usage: check-server (started by dtenant-check.socket)", file=sys.stderr)
        return 2
    CheckServer(activation.listening_socket("dtenant check-server")).serve_forever()
    return 0
