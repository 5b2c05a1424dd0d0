"""GET requests of root's own to a tenant's daemon, on the tenant's socket (stdlib only).

Sent with the reaper's user agent, so the authorization plugin does not count them as
the tenant's activity. The answer is read up to a bound: a daemon is the tenant's.
"""

from __future__ import annotations

import http.client
import socket

from dtenant_session import paths

REAPER_AGENT = "dtenant-reaper"
MAX_ANSWER = 8 << 20


def get(user: str, path: str, *, timeout: float = 10.0, agent: str = REAPER_AGENT) -> bytes:
    """The body of a 200 answer to GET path; OSError naming what went wrong otherwise."""

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            self.sock.connect(paths.socket_path(user))

    connection = UnixConnection("localhost", timeout=timeout)
    try:
        connection.request("GET", path, headers={"User-Agent": agent})
        reply = connection.getresponse()
        body = reply.read(MAX_ANSWER)
    except (OSError, http.client.HTTPException) as exc:
        raise OSError(f"the daemon did not answer: {exc}") from None
    finally:
        connection.close()
    if reply.status != 200:
        raise OSError(f"the daemon answered {reply.status}")
    return body


def info_count(user: str, key: str, *, timeout: float = 10.0, agent: str = REAPER_AGENT) -> int:
    """A count from the daemon's summary (`Containers`, `ContainersRunning`, `Images`):
    one small answer, where listing would fetch every container's JSON (a tenant's labels
    can make that large). OSError naming what went wrong otherwise."""
    import json

    answer = get(user, "/info", timeout=timeout, agent=agent)
    try:
        count = json.loads(answer)[key]
    except (ValueError, KeyError, TypeError) as exc:
        raise OSError(f"the daemon's /info has no {key} ({exc})") from None
    if not isinstance(count, int) or isinstance(count, bool):
        raise OSError(f"the daemon's /info has no {key} (it says {count!r})")
    return count
