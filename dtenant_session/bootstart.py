"""Which tenants' daemons start at boot: those with containers Docker restarts.

A tenant's daemon starts on demand (its socket), so after a reboot its containers with
restart policies would wait for the user's next `docker` command, where a plain
docker.service brings them back at boot. dtenant remembers, at every stop of a daemon
(stop-daemon, ExecStop=: before its containers stop) and at every reaper pass, whether
the daemon has a container it would restart when it starts again; at boot,
dtenant-boot.service (`dtenant boot`) provisions and starts exactly those tenants'
daemons. Idle tenants cost nothing. A host that lost power keeps what the last stop or
pass saw. Standard library only: stop-daemon imports it.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from dtenant_session import dockerapi, files, paths

NEVER = "0001-01-01T00:00:00Z"  # Docker's StartedAt of a container never started


def restarts_with_daemon(inspect: dict[str, Any]) -> bool:
    """Whether dockerd restarts this container when it starts (pure), as Docker 20.10's
    restore and restart manager decide, from /containers/ID/json taken while the daemon
    runs: a daemon's shutdown stops its running containers without counting that as a
    manual stop, and their exit status is then not 0 (SIGTERM or SIGKILL)."""
    state = inspect.get("State") or {}
    policy = (inspect.get("HostConfig") or {}).get("RestartPolicy") or {}
    name = policy.get("Name") or "no"
    running = bool(state.get("Running"))
    if (state.get("StartedAt") or NEVER) == NEVER:
        return False  # created, never started: Docker leaves it
    if name == "always":
        return True  # even when stopped by hand: a daemon start restarts it
    if name == "unless-stopped":
        # Not running: stopped by hand (one that exits by itself is being restarted).
        return running
    if name == "on-failure":
        retries = _number(policy.get("MaximumRetryCount"))
        left = retries == 0 or _number(inspect.get("RestartCount")) < retries
        return left and (running or _number(state.get("ExitCode")) != 0)
    return False


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def restarting(user: str, *, timeout: float = 5.0) -> list[str]:
    """Names of the running daemon's containers it would restart at its next start;
    OSError when it does not answer."""
    listing = json.loads(dockerapi.get(user, "/containers/json?all=1", timeout=timeout))
    names = []
    for entry in listing if isinstance(listing, list) else []:
        ident = str(entry.get("Id", "")) if isinstance(entry, dict) else ""
        if not ident:
            continue
        body = dockerapi.get(user, f"/containers/{quote(ident, safe='')}/json", timeout=timeout)
        inspect = json.loads(body)
        if isinstance(inspect, dict) and restarts_with_daemon(inspect):
            names.append(str(inspect.get("Name", ident)).lstrip("/"))
    return sorted(names)


def marker(user: str) -> str:
    return f"{paths.START_AT_BOOT_DIR}/{user}"


def remember(user: str, names: list[str]) -> None:
    """The daemon starts at boot when it has such containers (their names, for the admin)."""
    if names:
        os.makedirs(paths.START_AT_BOOT_DIR, mode=0o700, exist_ok=True)
        files.replace(marker(user), "".join(f"{n}\n" for n in names), files.PRIVATE)
    else:
        forget(user)


def forget(user: str) -> None:
    files.remove_path(marker(user))


def record(user: str) -> str:
    """Remember what the running daemon would restart; what happened, for the journal.
    A daemon that does not answer changes nothing: its daemon starts at boot if it did."""
    try:
        names = restarting(user)
    except (OSError, ValueError) as exc:
        return f"containers to restart at boot unknown, kept as they were: {exc}"
    remember(user, names)
    if names:
        return f"starts at boot for its containers: {', '.join(names)}"
    return "no container restarts with the daemon: it does not start at boot"


def marked() -> list[str]:
    """The tenants whose daemons start at boot."""
    try:
        return sorted(n for n in os.listdir(paths.START_AT_BOOT_DIR) if not n.startswith("."))
    except FileNotFoundError:
        return []
