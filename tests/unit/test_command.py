from __future__ import annotations

import pytest

from dtenant_session import command


def test_output_and_input() -> None:
    result = command.run([command.which("cat")], input="hello")
    assert result.stdout == "hello"
    assert command.run([command.which("cat")], input=b"\x00\x01").stdout == "\x00\x01"


def test_failure_names_command_and_stderr() -> None:
    with pytest.raises(command.CommandError) as caught:
        command.run([command.which("sh"), "-c", "echo broken >&2; exit 3"])
    message = str(caught.value)
    assert "sh -c" in message
    assert "exit code 3" in message
    assert "broken" in message


def test_timeout_is_an_error() -> None:
    with pytest.raises(command.CommandError, match=r"timed out after 0\.2 s"):
        command.run([command.which("sleep"), "5"], timeout=0.2)


def test_relative_program_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute path"):
        command.run(["sleep", "1"])


def test_which_searches_only_the_fixed_path() -> None:
    assert command.which("sh").startswith("/")
    with pytest.raises(command.CommandError, match="not found"):
        command.which("no-such-program-dtenant")


def test_unchecked_failure_returns_the_code() -> None:
    assert command.run([command.which("false")], check=False).returncode == 1
