"""The PAM session hook (pam_exec at open_session). A login must never fail or hang here.

Hot path (this module): the tenant is provisioned for the current configuration and its
socket is there: a few stat calls, `os` and `sys` only, exit. Otherwise the cold path
(login.py) provisions within hook.time_limit. At close_session the hook only records
the logout as activity (activity.py). Every failure is logged to the journal with the
user; the exit code is always 0.
"""

from __future__ import annotations

import os
import sys

from dtenant_session import stamp


def main() -> int:
    user = os.environ.get("PAM_USER", "")
    if not user or user == "root":
        return 0
    phase = os.environ.get("PAM_TYPE")
    if phase == "close_session":
        # Logging out is activity: the reaper counts its idle time from here.
        from dtenant_session import activity

        activity.touch(user)
        return 0
    if phase != "open_session":
        return 0
    if stamp.is_current(user, stamp.generation()):
        return 0
    try:
        from dtenant_session import login

        login.cold_path(user)
    except BaseException as exc:  # noqa: BLE001 - a login never fails because of us
        from dtenant_session.log import ERR, log

        log(
            f"login hook failed: {type(exc).__name__}: {exc}", priority=ERR, user=user, step="login"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
