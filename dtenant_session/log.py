"""Structured logging to the journal: `journalctl -t dtenant DTENANT_USER=alice`.

Falls back to stderr where python3-systemd is missing, so a log line is never lost in a
crash of its own.

Debug traces: one line for every command run (command.py), D-Bus call (systemd.py) and
decision, with its outcome and duration, to the journal at debug priority
(`journalctl -t dtenant -p debug DTENANT_TRACE=command`). On in a process started with
DTENANT_DEBUG=1 (`dtenant --debug`, a unit's drop-in) or while the file /etc/dtenant/debug
exists (every dtenant process, the login's cold path included: pam-hook clears the
environment); `dtenant --debug` prints the lines on stderr too. Decided once per process,
at the first trace point (a server, for each request: `decide_again`): off, a trace point
costs a test of a boolean.
"""

from __future__ import annotations

import os
import sys
import time

from dtenant_session import paths

IDENTIFIER = "dtenant"
ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7
DEBUG_ENV = "DTENANT_DEBUG"


class _Debug:
    on: bool | None = None  # None: not decided yet
    stderr = False


def debugging() -> bool:
    if _Debug.on is None:
        _Debug.on = os.environ.get(DEBUG_ENV) == "1" or os.path.exists(paths.DEBUG_FLAG)
    return _Debug.on


def decide_again() -> None:
    """For a long-running server: whether to trace is decided anew at the next trace."""
    if os.environ.get(DEBUG_ENV) != "1":
        _Debug.on = None


def enable_debug(*, stderr: bool) -> None:
    """Trace from now on; dtenant programs this process starts inherit it."""
    os.environ[DEBUG_ENV] = "1"
    _Debug.on, _Debug.stderr = True, stderr


def trace_line(kind: str, subject: str, outcome: str, seconds: float) -> str:
    return f"{kind} {subject} -> {outcome} ({seconds * 1000:.1f} ms)"


def trace(kind: str, subject: str, outcome: str, started: float, *, user: str | None = None
          ) -> None:  # fmt: skip
    """One debug line: `kind` (command, dbus, job, decision) `subject` ended in `outcome`
    after the time since `started` (time.monotonic())."""
    if not debugging():
        return
    seconds = time.monotonic() - started
    message = trace_line(kind, subject, outcome, seconds)
    if _Debug.stderr:
        print(f"dtenant: debug: {message}", file=sys.stderr, flush=True)
    fields = {"DTENANT_TRACE": kind, "DTENANT_MS": f"{seconds * 1000:.1f}"}
    _send(message, DEBUG, user, fields, echo=not _Debug.stderr)


def log(message: str, *, priority: int = INFO, user: str | None = None, step: str = "") -> None:
    _send(message, priority, user, {"DTENANT_STEP": step} if step else {}, echo=True)


def _send(message: str, priority: int, user: str | None, extra: dict[str, str], *, echo: bool
          ) -> None:  # fmt: skip
    fields = {"SYSLOG_IDENTIFIER": IDENTIFIER, "PRIORITY": str(priority), **extra}
    if user is not None:
        fields["DTENANT_USER"] = user
    try:
        from systemd import journal

        journal.send(message, **fields)
    except Exception:  # noqa: BLE001 - logging must never raise
        if echo:
            prefix = f"dtenant[{user}]" if user else "dtenant"
            print(f"{prefix}: {message}", file=sys.stderr)
