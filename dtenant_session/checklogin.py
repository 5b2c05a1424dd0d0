"""`dtenant check-login USER`: open a real PAM session for USER and report what a login
would do: eligibility, DOCKER_HOST, provisioning and how long it took.

It goes through the PAM service `dtenant-check-login` (root, no password: pam_rootok),
whose session stack is the one every login uses, so the hook runs for real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dtenant_session import config, paths, stamp, tenant
from dtenant_session.errors import DtenantError

SERVICE = "dtenant-check-login"


@dataclass
class LoginReport:
    user: str
    eligible: bool
    reason: str
    session_opened: bool
    docker_host: str
    provisioned: bool
    socket: str
    seconds: float


def _authenticator() -> Any:
    """python-pam's authenticator, keeping its conversation function alive: python-pam
    drops it when authenticate() returns, and a module that talks during
    open_session would then call freed memory."""
    import pam

    authenticator = pam.PamAuthenticator()  # type: ignore[attr-defined]  # untyped re-export
    start = authenticator.pam_start

    def pam_start_keeping_conversation(*args: Any) -> Any:
        authenticator.dtenant_conversation = args[2]  # byref(conv) holds conv
        return start(*args)

    authenticator.pam_start = pam_start_keeping_conversation
    return authenticator


def check(user: str) -> LoginReport:
    settings = config.load()
    if tenant.by_name(user) is None:
        raise DtenantError(f"no such user {user!r} (getent passwd {user} finds nothing)")
    try:
        tenant.check_eligible(tenant.lookup(user), settings.eligibility)
        eligible, reason = True, "eligible"
    except tenant.NotEligible as exc:
        eligible, reason = False, str(exc)
    session = _authenticator()
    started = time.monotonic()
    if not session.authenticate(user, "", service=SERVICE, call_end=False):
        raise DtenantError(f"PAM refused {user!r} via {SERVICE}: {session.reason} "
                           f"(is /etc/pam.d/{SERVICE} installed?)")  # fmt: skip
    opened = session.open_session() == 0
    seconds = time.monotonic() - started
    environment = session.getenvlist() or {}
    session.close_session()
    session.end()
    return LoginReport(
        user=user,
        eligible=eligible,
        reason=reason if opened else f"{reason}; open_session failed: {session.reason}",
        session_opened=opened,
        docker_host=str(environment.get("DOCKER_HOST", "")),
        provisioned=stamp.is_current(user),
        socket=paths.socket_path(user),
        seconds=round(seconds, 3),
    )
