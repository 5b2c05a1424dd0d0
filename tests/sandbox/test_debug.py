"""`dtenant --debug` and /etc/dtenant/debug on a real host: every command, D-Bus call and
systemd job the provisioning makes, with its duration, on stderr and in the journal."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.lab import host
from tests.sandbox.conftest import Journal

TRACE = re.compile(r"^dtenant: debug: (command|dbus|job|decision) .+ -> .+ \(\d+\.\d ms\)$")


def _trace_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("dtenant: debug: ")]
    assert all(TRACE.match(line) for line in lines), lines
    return [line.removeprefix("dtenant: debug: ") for line in lines]


def test_debug_provision_traces_commands_and_dbus_calls(lab: host.Lab) -> None:
    journal = Journal(lab)
    result = lab.run(["dtenant", "--debug", "provision", "alice"])
    lines = _trace_lines(result.stderr)
    assert any(line.startswith("dbus connect -> ok") for line in lines), lines
    assert any(re.match(r"dbus systemd1\.Manager\.StartUnit\('docker@alice\.socket', "
                        r"'replace'\) -> ok", line) for line in lines), lines  # fmt: skip
    assert any(line.startswith("job StartUnit docker@alice.socket -> done") for line in lines)
    assert any(line.startswith("command `/usr/sbin/nft ") for line in lines), lines
    # The same lines in the journal, at debug priority.
    logged = journal.since(lines[-1])
    assert lines[-1] in logged
    debug = lab.run(["journalctl", "-t", "dtenant", "-p", "debug..debug", "DTENANT_TRACE=dbus",
                     "--no-pager", "-o", "cat"]).stdout  # fmt: skip
    assert "StartUnit('docker@alice.socket', 'replace')" in debug


def test_status_traces_its_dbus_calls_and_nothing_without_debug(lab: host.Lab) -> None:
    traced = _trace_lines(lab.run(["dtenant", "--debug", "status"]).stderr)
    assert any(line.startswith("dbus systemd1.Manager.ListUnitsByPatterns(") for line in traced)
    assert lab.run(["dtenant", "status"]).stderr == ""


@pytest.fixture
def debug_flag(lab: host.Lab) -> Iterator[None]:
    lab.run(["touch", "/etc/dtenant/debug"])
    yield
    lab.run(["rm", "-f", "/etc/dtenant/debug"])


def test_the_flag_file_traces_a_login_s_cold_path(lab: host.Lab, debug_flag: None) -> None:
    lab.add_account("traced")
    journal = Journal(lab)
    lab.ssh("traced", "true")
    logged = journal.since("StartUnit docker@traced.socket")
    assert re.search(r"^decision login traced -> eligible: provision \(\d+\.\d ms\)$", logged,
                     re.MULTILINE), logged  # fmt: skip
    assert re.search(r"^job StartUnit docker@traced\.socket -> done \(\d+\.\d ms\)$", logged,
                     re.MULTILINE), logged  # fmt: skip
