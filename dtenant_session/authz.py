"""The tenant's Docker authorization plugin: every API request of the tenant's daemon
passes through it.

One plugin per tenant daemon (`dtenant-USER`), because a plugin cannot otherwise tell
whose request it sees (`User` is empty on unix sockets). Socket-activated by
dtenant-authz@USER.socket at /run/docker/plugins/dtenant-USER.sock; exits when idle and
comes back on the next connection. Protocol: POST /Plugin.Activate ->
{"Implements": ["authz"]}; /AuthZPlugin.AuthZReq and /AuthZPlugin.AuthZRes get the
request (and response) and answer {"Allow": bool, "Msg": str}, always with HTTP 200.
A plugin that is down means every request is denied: Docker fails closed.

The policy itself is policy.py; this module is the server around it. Every request also
counts as activity for the reaper, except the reaper's own. Standard library only: it
starts when the daemon starts.
"""

from __future__ import annotations

import json
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

from dtenant_session import activity

IDLE_EXIT = 600.0  # seconds without a request before the plugin exits
ACTIVITY_EVERY = 5.0  # touch the activity file at most this often
REAPER_AGENT = "dtenant-reaper"
SD_LISTEN_FDS_START = 3

Decision = tuple[bool, str]
Policy = Callable[[dict[str, Any]], Decision]


def deny_all(reason: str) -> Policy:
    def deny(_request: dict[str, Any]) -> Decision:
        return False, f"dtenant: {reason}"

    return deny


def resolve(path: str) -> str:
    """Where a bind source really leads: the path cleaned as Docker cleans it, then every
    symlink of its existing part resolved (strictly: what cannot be resolved is an error,
    never a guess)."""
    cleaned = os.path.normpath(path)
    head, rest = cleaned, list[str]()
    while True:
        try:
            real = os.path.realpath(head, strict=True)
            break
        except FileNotFoundError:
            head, name = os.path.split(head)
            rest.insert(0, name)
    return os.path.join(real, *rest) if rest else real


def tenant_policy(user: str) -> Policy:
    """The configured policy for user; a policy that cannot be built denies everything."""
    import pwd

    from dtenant_session import config, paths, policy
    from dtenant_session.errors import DtenantError

    try:
        settings = config.load()
        home = os.path.realpath(pwd.getpwnam(user).pw_dir, strict=True)
        with open(f"{paths.TENANTS_DIR}/{user}/daemon.json") as stream:
            pool = json.load(stream)["default-address-pools"][0]["base"]
    except (DtenantError, OSError, KeyError, IndexError, ValueError) as exc:
        return deny_all(f"the policy of {user} cannot be loaded ({exc}); ask the administrator")
    roots = tuple(
        resolve(root.replace("{home}", home).replace("{user}", user))
        for root in settings.policy.bind_roots
    )
    tenant = policy.Tenant(user=user, home=home, networks_pool=pool, bind_roots=roots)

    def decide(request: dict[str, Any]) -> Decision:
        return policy.authorize(request, settings.policy, tenant, resolve)

    return decide


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, listener: socket.socket, user: str, policy: Policy) -> None:
        super().__init__("", Handler, bind_and_activate=False)
        self.socket = listener
        self.user = user
        self.policy = policy
        self.last_request = time.monotonic()
        self._last_touch = 0.0
        self._lock = threading.Lock()

    def record_activity(self, headers: dict[str, Any]) -> None:
        self.last_request = time.monotonic()
        agent = " ".join(str(v) for k, v in headers.items() if k.lower() == "user-agent")
        if agent.startswith(REAPER_AGENT):
            return
        with self._lock:
            if self.last_request - self._last_touch < ACTIVITY_EVERY:
                return
            self._last_touch = self.last_request
        activity.touch(self.user)


class Handler(BaseHTTPRequestHandler):
    server: PluginServer
    # Keep-alive: Docker's plugin client reuses its connection, sparing a connect and a
    # thread for each of the two calls every API request makes.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/Plugin.Activate":
            self.server.record_activity({})
            self._reply({"Implements": ["authz"]})
        elif self.path == "/AuthZPlugin.AuthZReq":
            self._reply(self._authorize(body))
        elif self.path == "/AuthZPlugin.AuthZRes":
            self._reply({"Allow": True})
        else:
            self._reply({"Err": f"unknown endpoint {self.path}"}, status=404)

    def _authorize(self, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return {"Allow": False, "Msg": "dtenant: malformed authorization request"}
        headers = request.get("RequestHeaders") or {}
        self.server.record_activity(headers if isinstance(headers, dict) else {})
        allowed, message = self.server.policy(request)
        return {"Allow": allowed, "Msg": message}

    def _reply(self, payload: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per API request would flood the journal


def inherited_socket() -> socket.socket:
    """The listening socket systemd passed (sd_listen_fds(3))."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        raise SystemExit("dtenant authz: expects exactly one socket from systemd (LISTEN_FDS)")
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def serve(user: str, policy: Policy, idle_exit: float = IDLE_EXIT) -> None:
    server = PluginServer(inherited_socket(), user, policy)

    def exit_when_idle() -> None:
        while time.monotonic() - server.last_request < idle_exit:
            time.sleep(min(idle_exit, 30.0))
        server.shutdown()

    threading.Thread(target=exit_when_idle, daemon=True).start()
    server.serve_forever(poll_interval=1.0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: authz USER", file=sys.stderr)
        return 2
    serve(argv[0], tenant_policy(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
