"""The login hook's cold path: provision within hook.time_limit, never failing a login.

pam/pam-hook.sh runs this (/usr/lib/dtenant/provision-at-login) when its hot path finds the
tenant not provisioned for the current configuration. Provisioning runs in a child
process; this waits for it at most hook.time_limit seconds, then kills it (provisioning
is idempotent and crash-safe: the next login converges) and lets the login go on. Every
failure is logged to the journal with the user; the exit status is always 0.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from collections.abc import Callable

from dtenant_session import paths
from dtenant_session.config import Config
from dtenant_session.errors import DtenantError


def main() -> int:
    user = os.environ.get("PAM_USER", "")
    if os.environ.get("PAM_TYPE") != "open_session" or not user or user == "root":
        return 0
    try:
        cold_path(user)
    except BaseException as exc:  # noqa: BLE001 - a login never fails because of us
        _log(f"login hook failed: {type(exc).__name__}: {exc}", user)
    return 0


def _log(message: str, user: str, priority: int = 3) -> None:
    from dtenant_session.log import log

    log(message, priority=priority, user=user, step="login")


def cold_path(user: str) -> None:
    from dtenant_session import config, dockerhost, log, tenant

    started = time.monotonic()
    try:
        settings = config.load()
    except config.ConfigError as exc:
        _log(f"configuration error, {user!r} not provisioned: {exc}", user)
        return
    try:
        tenant.check_eligible(tenant.lookup(user), settings.eligibility)
        tenant.check_enabled(user)
    except tenant.Disabled as exc:
        # Kept on the list: their docker commands reach the explainer, which says why.
        _docker_host(dockerhost.add, user)
        _log(f"not provisioned: {exc}", user, priority=5)
        return
    except tenant.NotEligible as exc:
        _docker_host(dockerhost.discard, user)  # the rules may have changed since
        log.trace("decision", f"login {user}", f"not provisioned: {exc}", started, user=user)
        return  # not ours: root, system users, anyone the config excludes
    log.trace("decision", f"login {user}", "eligible: provision", started, user=user)
    # Before provisioning, which may take long or fail: pam_listfile reads the list right
    # after this hook, and an eligible user's DOCKER_HOST never depended on provisioning.
    _docker_host(dockerhost.add, user)
    _provision_within(user, settings)


def _docker_host(change: Callable[[str], None], user: str) -> None:
    try:
        change(user)
    except (DtenantError, OSError) as exc:
        _log(f"{paths.DOCKER_HOST_USERS} not changed: {exc}", user)


def _provision_within(user: str, settings: Config) -> None:
    time_limit = settings.hook.time_limit
    started = time.monotonic()
    child = os.fork()
    if child == 0:
        os._exit(_provision_child(user, settings))
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


def _provision_child(user: str, settings: Config) -> int:
    try:
        from dtenant_session import provision

        provision.ensure(user, settings, timeout=settings.hook.time_limit)
    except DtenantError as exc:
        _log(f"provisioning failed: {exc}", user)
        return 1
    except Exception as exc:  # noqa: BLE001 - a bug must not fail a login either
        _log(f"provisioning failed: {type(exc).__name__}: {exc}", user)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
