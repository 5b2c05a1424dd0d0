"""The PAM session hook (pam_exec at open_session). A login must never fail or hang here.

Hot path: the tenant is provisioned for the current configuration and its socket is
there: a few stat calls, standard library only, exit. Cold path: provision in a child
process and wait for it at most hook.time_limit seconds; on timeout kill it (provisioning
is idempotent and crash-safe: the next login converges) and let the login go on. Every
failure is logged to the journal with the user. The exit code is always 0.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

from dtenant_session import stamp

DEFAULT_TIME_LIMIT = 10.0


def main() -> int:
    if os.environ.get("PAM_TYPE") != "open_session":
        return 0
    user = os.environ.get("PAM_USER", "")
    if not user or user == "root":
        return 0
    if stamp.is_current(user, stamp.generation()):
        return 0
    try:
        cold_path(user)
    except BaseException as exc:
        _log(f"login hook failed: {type(exc).__name__}: {exc}", user)
    return 0


def _log(message: str, user: str, priority: int = 3) -> None:
    from dtenant_session.log import log

    log(message, priority=priority, user=user, step="login")


def cold_path(user: str) -> None:
    from dtenant_session import config, tenant

    try:
        settings = config.load()
    except config.ConfigError as exc:
        _log(f"configuration error, {user!r} not provisioned: {exc}", user)
        return
    try:
        tenant.check_eligible(tenant.lookup(user), settings.eligibility)
    except tenant.NotEligible:
        return  # not ours: root, system users, anyone the config excludes
    _provision_within(user, settings.hook.time_limit)


def _provision_within(user: str, time_limit: float) -> None:
    started = time.monotonic()
    child = os.fork()
    if child == 0:
        os._exit(_provision_child(user))
    pidfd = os.pidfd_open(child)
    try:
        ready, _, _ = select.select([pidfd], [], [], time_limit)
    finally:
        os.close(pidfd)
    if not ready:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        _log(f"provisioning did not finish within {time_limit:g} s (hook.time_limit); "
             "gave up, the login goes on and the next login tries again", user)  # fmt: skip
        return
    _, status = os.waitpid(child, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        elapsed = (time.monotonic() - started) * 1000
        _log(f"provisioned at login in {elapsed:.0f} ms", user, priority=6)


def _provision_child(user: str) -> int:
    try:
        from dtenant_session import config, provision

        settings = config.load()
        provision.ensure(user, settings, timeout=settings.hook.time_limit)
    except Exception as exc:
        _log(f"provisioning failed: {exc}", user)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
