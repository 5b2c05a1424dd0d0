"""Structured logging to the journal: `journalctl -t dtenant DTENANT_USER=alice`.

Falls back to stderr where python3-systemd is missing, so a log line is never lost in a
crash of its own.
"""

from __future__ import annotations

import sys

IDENTIFIER = "dtenant"
ERR, WARNING, NOTICE, INFO, DEBUG = 3, 4, 5, 6, 7


def log(message: str, *, priority: int = INFO, user: str | None = None, step: str = "") -> None:
    fields = {"SYSLOG_IDENTIFIER": IDENTIFIER, "PRIORITY": str(priority)}
    if user is not None:
        fields["DTENANT_USER"] = user
    if step:
        fields["DTENANT_STEP"] = step
    try:
        from systemd import journal

        journal.send(message, **fields)
    except Exception:  # noqa: BLE001 - logging must never raise
        prefix = f"dtenant[{user}]" if user else "dtenant"
        print(f"{prefix}: {message}", file=sys.stderr)
