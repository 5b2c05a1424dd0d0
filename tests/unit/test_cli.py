"""The command line: every command has help, completion knows every command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dtenant_session import cli

CHECKOUT = Path(__file__).resolve().parents[2]


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_completion_knows_every_command() -> None:
    script = (CHECKOUT / "packaging" / "dtenant.bash-completion").read_text()
    listed = re.search(r'local commands="([^"]+)"', script)
    assert listed is not None
    assert set(listed.group(1).split()) == set(_commands())


def test_man_page_documents_every_command() -> None:
    page = (CHECKOUT / "packaging" / "dtenant.8").read_text()
    for name in _commands():
        assert re.search(rf"^\.B[I]? \"?{re.escape(name)}\b", page, re.MULTILINE), name


@pytest.mark.parametrize("name", sorted(_commands()))
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([name, "--help"])
    assert done.value.code == 0
    assert "usage: dtenant" in capsys.readouterr().out


def test_errors_are_one_line_not_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rename", "old", "no-such-user-at-all"]) == 1
    err = capsys.readouterr().err
    assert err == "dtenant: user 'no-such-user-at-all': no such user\n"
