"""Debug traces (`dtenant --debug`, DTENANT_DEBUG=1, /etc/dtenant/debug): one line per
command run, D-Bus call and decision, with outcome and duration; nothing when off."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtenant_session import cli, command, log, paths, systemd

LINE = re.compile(r"^dtenant: debug: (\w+) (.+?) -> (.+) \((\d+\.\d) ms\)$")


@pytest.fixture(autouse=True)
def undecided(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No debug switch set; the flag file is a path of the test's own."""
    monkeypatch.delenv(log.DEBUG_ENV, raising=False)
    monkeypatch.setattr(paths, "DEBUG_FLAG", str(tmp_path / "debug"))
    monkeypatch.setattr(log._Debug, "on", None)
    monkeypatch.setattr(log._Debug, "stderr", False)
    yield tmp_path / "debug"


def _traces(capsys: pytest.CaptureFixture[str]) -> list[tuple[str, ...]]:
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("dtenant: debug:")]
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    return [m.groups() for m in parsed if m]


def test_off_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    command.run([command.which("true")])
    command.run([command.which("false")], check=False)
    assert not log.debugging()
    assert capsys.readouterr().err == ""


def test_a_command_run_is_one_line_with_argv_exit_status_and_milliseconds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.enable_debug(stderr=True)
    started = time.monotonic()
    command.run([command.which("sleep"), "0.05"])
    elapsed = (time.monotonic() - started) * 1000
    ((kind, subject, outcome, ms),) = _traces(capsys)
    assert (kind, subject, outcome) == ("command", f"`{command.which('sleep')} 0.05`", "exit 0")
    assert 50 <= float(ms) <= elapsed + 0.1


def test_a_failed_command_shows_its_status_and_last_error_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.enable_debug(stderr=True)
    with pytest.raises(command.CommandError):
        command.run([command.which("sh"), "-c", "echo first >&2; echo it broke >&2; exit 3"])
    with pytest.raises(command.CommandError):
        command.run(["/nonexistent/program", "--flag"])
    with pytest.raises(command.CommandError):
        command.run([command.which("sleep"), "5"], timeout=0.1)
    outcomes = [(subject, outcome) for _kind, subject, outcome, _ms in _traces(capsys)]
    assert outcomes == [
        (f"`{command.which('sh')} -c 'echo first >&2; echo it broke >&2; exit 3'`",
         "exit 3: it broke"),
        ("`/nonexistent/program --flag`", "could not start: No such file or directory"),
        (f"`{command.which('sleep')} 5`", "timed out after 0.1 s"),
    ]  # fmt: skip


def test_a_dbus_call_names_interface_member_arguments_and_outcome(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log.enable_debug(stderr=True)
    started = time.monotonic()
    systemd._trace_call(systemd.MANAGER, "StartUnit", ["docker@alice.socket", "replace"],
                        "ok", started)  # fmt: skip
    systemd._trace_call(systemd.MANAGER, "EnableUnitFiles", [["x" * 300], False, False],
                        "error org.freedesktop.DBus.Error.AccessDenied", started)  # fmt: skip
    (first, second) = _traces(capsys)
    assert first[:3] == ("dbus", "systemd1.Manager.StartUnit('docker@alice.socket', 'replace')",
                         "ok")  # fmt: skip
    assert second[1].startswith("systemd1.Manager.EnableUnitFiles([")
    assert len(second[1]) < 260 and second[1].endswith("...)")
    assert second[2] == "error org.freedesktop.DBus.Error.AccessDenied"


def test_dtenant_debug_switches_it_on_for_itself_and_its_children(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(log.DEBUG_ENV, "0")  # restored after the test
    assert cli.main(["--debug", "rename", "old", "no-such-user-at-all"]) == 1
    assert log.debugging()
    child = command.run([command.which("sh"), "-c", f"echo ${log.DEBUG_ENV}"]).stdout
    assert child == "1\n"
    assert [kind for kind, *_ in _traces(capsys)] == ["command"]


def test_the_environment_or_the_flag_file_switch_it_on(
    monkeypatch: pytest.MonkeyPatch, undecided: Path
) -> None:
    monkeypatch.setenv(log.DEBUG_ENV, "1")
    assert log.debugging()
    monkeypatch.delenv(log.DEBUG_ENV)
    monkeypatch.setattr(log._Debug, "on", None)
    assert not log.debugging()
    undecided.touch()
    monkeypatch.setattr(log._Debug, "on", None)
    assert log.debugging()


def test_decided_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not log.debugging()
    monkeypatch.setenv(log.DEBUG_ENV, "1")
    assert not log.debugging()  # no environment lookup or stat at every trace point


def test_off_a_trace_point_costs_next_to_nothing() -> None:
    assert not log.debugging()
    rounds = 100_000
    started = time.perf_counter()
    for _ in range(rounds):
        log.trace("command", "`/bin/true`", "exit 0", started)
    per_call = (time.perf_counter() - started) / rounds
    assert per_call < 2e-6, f"{per_call * 1e9:.0f} ns a trace point"
