"""A lab (`python3 -m tests.lab`) leaves nothing on the real machine, even after a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.lab.paths import LabPaths
from tests.sandbox import leftovers
from tests.sandbox.conftest import CHECKOUT

NAME = "pytest-lifecycle"


def _other_labs() -> tuple[str, ...]:
    return tuple(s.name for s in host.list_labs() if s.name != NAME and s.state == "running")


@pytest.fixture
def clean_machine() -> Iterator[leftovers.Snapshot]:
    """A snapshot of the real machine taken before the test's lab exists."""
    host.down(NAME)
    yield leftovers.take(_other_labs())
    host.down(NAME)


def _left_behind(before: leftovers.Snapshot) -> dict[str, list[str]]:
    # The session's own lab may run beside this one; its processes and cgroups are not ours.
    others = _other_labs()
    report = leftovers.new_things(before, leftovers.take(others))
    kept = {}
    for kind, items in report.items():
        ours = [i for i in items if not any(f"dtenant-lab-{o}" in i for o in others)]
        if ours:
            kept[kind] = ours
    return kept


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.lab", *args],
        capture_output=True, text=True, timeout=180, check=False, cwd=CHECKOUT,
    )  # fmt: skip


def _wait_until_dead() -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        s.state == "running" for s in host.list_labs() if s.name == NAME
    ):
        time.sleep(0.05)
    assert [s.state for s in host.list_labs() if s.name == NAME] == ["dead"]


def test_down_leaves_nothing_behind(clean_machine: leftovers.Snapshot) -> None:
    lab = host.up(NAME)
    # Give the lab things to leave behind: a bridge, a running container, a service.
    lab.run(["ip", "link", "add", "leak0", "type", "bridge"])
    lab.run(testimage.import_argv(), input=testimage.build())
    lab.run(["docker", "run", "-d", testimage.IMAGE, "sleep", "1000"])
    lab.run(["systemd-run", "--unit=lingering", "/bin/sleep", "1000"])
    assert _lab("down", NAME).returncode == 0
    assert not LabPaths(NAME).state.exists()
    assert _left_behind(clean_machine) == {}


def test_crashed_lab_is_cleaned_by_next_down(clean_machine: leftovers.Snapshot) -> None:
    lab = host.up(NAME)
    os.kill(lab.record.launcher_pid, signal.SIGKILL)
    os.kill(lab.pid, signal.SIGKILL)
    _wait_until_dead()
    result = _lab("down", NAME)
    assert result.returncode == 0, result.stderr
    assert _left_behind(clean_machine) == {}


def test_crashed_lab_is_cleaned_by_next_up(clean_machine: leftovers.Snapshot) -> None:
    lab = host.up(NAME)
    os.kill(lab.pid, signal.SIGKILL)
    _wait_until_dead()
    again = host.up(NAME)
    assert again.run(["systemctl", "is-system-running"], check=False).stdout.strip() in (
        "running", "degraded")  # fmt: skip
    host.down(NAME)
    assert _left_behind(clean_machine) == {}


def test_cli_verbs(clean_machine: leftovers.Snapshot) -> None:
    up = _lab("up", NAME)
    assert up.returncode == 0, up.stderr
    assert "booted in" in up.stdout
    listed = _lab("list")
    assert any(line.split()[:2] == [NAME, "running"] for line in listed.stdout.splitlines())
    ran = _lab("exec", NAME, "--", "hostname")
    assert ran.stdout.strip() == f"lab-{NAME}"
    twice = _lab("up", NAME)
    assert twice.returncode == 1
    assert "already up" in twice.stderr
    assert "Traceback" not in twice.stderr
    assert _lab("down", NAME).returncode == 0
    gone = _lab("exec", NAME, "--", "true")
    assert gone.returncode == 1
    assert "not running" in gone.stderr
