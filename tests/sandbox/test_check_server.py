"""Each daemon's pre-start check through the check server (dtenant-check.service): the
same checks, asked for by a static program in the daemon's cgroup; without the server
(or when the daemon's filter must be loaded again) the checks run in a process of their
own, so a daemon never starts unchecked; only root reaches the server."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator

import pytest

from tests.lab import host
from tests.sandbox.conftest import Journal

USER = "alice"
DAEMON = f"docker@{USER}.service"
FALLBACK = "gave no answer: checking alice here"


@pytest.fixture
def debugging(lab: host.Lab, tenants: tuple[str, ...]) -> Iterator[None]:
    """dtenant's programs trace what they do (the server: each check it answers)."""
    lab.run(["touch", "/etc/dtenant/debug"])
    try:
        yield
    finally:
        lab.run(["rm", "-f", "/etc/dtenant/debug"])


def _stop(lab: host.Lab) -> None:
    """The daemon stopped; its next start does not count towards the start limit."""
    lab.run(["systemctl", "stop", DAEMON])
    lab.run(["systemctl", "reset-failed", DAEMON], check=False)


def _unit_journal_since(lab: host.Lab, since: str) -> str:
    return lab.run(["journalctl", "-u", DAEMON, "--since", since, "--no-pager", "-o", "cat"]
                   ).stdout  # fmt: skip


def _now(lab: host.Lab) -> str:
    stamp = lab.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
    time.sleep(1)  # --since has a resolution of seconds
    return stamp


def test_each_start_is_checked_by_the_server(lab: host.Lab, debugging: None) -> None:
    _stop(lab)
    journal = Journal(lab)
    lab.ssh(USER, "docker ps -q")
    said = journal.since("pre-start check alice")
    assert "pre-start check alice (pid " in said and "-> allowed" in said, said
    server = lab.run(["systemctl", "show", "-p", "ControlGroup", "dtenant-check.service"])
    assert "dtenant-check.service" in server.stdout


def test_what_the_check_refuses_the_server_refuses(lab: host.Lab, debugging: None) -> None:
    lab.run(["dtenant", "disable", USER, "--reason", "checked by the server"], timeout=180)
    try:
        since, journal = _now(lab), Journal(lab)
        refused = lab.ssh(USER, "docker ps -q", check=False)
        assert refused.returncode != 0
        said = journal.since("-> refused")
        assert "pre-start check alice (pid " in said and "-> refused: " in said, said
        unit = _unit_journal_since(lab, since)
        assert "refusing to start the daemon of alice: the administrator disabled" in unit
        assert FALLBACK not in unit
    finally:
        lab.run(["dtenant", "enable", USER], timeout=180)
    lab.ssh(USER, "docker ps -q")


def test_without_the_server_every_start_is_checked_all_the_same(lab: host.Lab,
                                                                 tenants: tuple[str, ...]
                                                                 ) -> None:  # fmt: skip
    lab.run(["systemctl", "mask", "--runtime", "--now", "dtenant-check.socket",
             "dtenant-check.service"])  # fmt: skip
    try:
        lab.run(["dtenant", "disable", USER, "--reason", "no server"], timeout=180)
        try:
            since = _now(lab)
            assert lab.ssh(USER, "docker ps -q", check=False).returncode != 0
            unit = _unit_journal_since(lab, since)
            assert FALLBACK in unit, unit
            assert "refusing to start the daemon of alice: the administrator disabled" in unit
        finally:
            lab.run(["dtenant", "enable", USER], timeout=180)
        _stop(lab)
        since = _now(lab)
        lab.ssh(USER, "docker ps -q")  # allowed, checked in a process of its own
        assert FALLBACK in _unit_journal_since(lab, since)
    finally:
        lab.run(["systemctl", "unmask", "--runtime", "dtenant-check.socket",
                 "dtenant-check.service"])  # fmt: skip
    _stop(lab)
    since = _now(lab)
    lab.ssh(USER, "docker ps -q")  # the server is back on the next start
    assert FALLBACK not in _unit_journal_since(lab, since)


def test_only_root_reaches_the_server(lab: host.Lab, tenants: tuple[str, ...]) -> None:
    connect = ("import socket, sys\n"
               "s = socket.socket(socket.AF_UNIX)\n"
               "s.connect('/run/dtenant/check.sock'); s.sendall(b'alice\\n')\n"
               "sys.stdout.write(s.makefile('rb').read().decode())\n")  # fmt: skip
    lab.run(["systemctl", "start", "dtenant-check.socket"])
    as_user = lab.ssh(USER, f"python3 -c {shlex.quote(connect)}", check=False)
    assert as_user.returncode != 0 and "PermissionError" in as_user.stderr, as_user.stderr
    # Root, but not a daemon about to start: not in the tenant's slice, nothing opened.
    _stop(lab)
    answer = lab.run(["python3", "-c", connect]).stdout
    assert answer.startswith("1\n") and "not started in dtenant.slice" in answer, answer
    # The same from the program a daemon runs: its probe gets through, the direct check
    # runs, and refuses just the same.
    direct = lab.run(["/usr/lib/dtenant/check-tenant", USER], check=False)
    assert direct.returncode == 1 and "not started in dtenant.slice" in direct.stderr
    lab.ssh(USER, "docker ps -q")  # as the next tests expect it
