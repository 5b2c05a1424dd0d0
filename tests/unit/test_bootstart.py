"""Which containers a daemon restarts when it starts, as Docker 20.10 decides (issue 16)."""

from __future__ import annotations

from typing import Any

import pytest

from dtenant_session import bootstart

STARTED = "2026-01-02T03:04:05.6Z"


def _container(policy: str, *, running: bool, exit_code: int = 0, retries: int = 0,
               restarts: int = 0, started: str = STARTED) -> dict[str, Any]:  # fmt: skip
    return {
        "Name": "/c",
        "RestartCount": restarts,
        "State": {"Running": running, "ExitCode": exit_code, "StartedAt": started},
        "HostConfig": {"RestartPolicy": {"Name": policy, "MaximumRetryCount": retries}},
    }


@pytest.mark.parametrize(
    ("container", "restarts"),
    [
        (_container("always", running=True), True),
        (_container("always", running=False, exit_code=137), True),  # stopped by hand
        (_container("always", running=False, started=bootstart.NEVER), False),  # only created
        (_container("unless-stopped", running=True), True),
        (_container("unless-stopped", running=False, exit_code=137), False),  # by hand
        (_container("on-failure", running=True), True),  # the shutdown's signal: not 0
        (_container("on-failure", running=False, exit_code=1), True),
        (_container("on-failure", running=False, exit_code=0), False),  # finished
        (_container("on-failure", running=True, retries=3, restarts=3), False),  # used up
        (_container("on-failure", running=True, retries=3, restarts=2), True),
        (_container("no", running=True), False),
        (_container("", running=True), False),
        ({}, False),
        ({"State": None, "HostConfig": {"RestartPolicy": None}}, False),
        (_container("always", running=True) | {"State": {"Running": "yes"}}, False),
    ],
)
def test_restarts_with_daemon(container: dict[str, Any], restarts: bool) -> None:
    assert bootstart.restarts_with_daemon(container) is restarts
