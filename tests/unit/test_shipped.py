"""The product ships nothing a production host does not need: the labs (a root tool that
pivot_roots and SIGKILLs namespaces) and the test image are development tools of the
checkout, out of the package, the `dtenant` command, its man page and its completion."""

from __future__ import annotations

import argparse
import ast
import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from dtenant_session import cli
from tests.lab import cli as lab_cli

CHECKOUT = Path(__file__).resolve().parents[2]
PACKAGE = CHECKOUT / "dtenant_session"
DEVELOPMENT = ("lab", "testimage")


def test_the_package_holds_no_development_tool() -> None:
    names = {p.stem for p in PACKAGE.rglob("*.py")} | {
        p.name for p in PACKAGE.rglob("*") if p.is_dir()
    }
    assert not names & set(DEVELOPMENT)


def test_the_package_never_imports_the_tests() -> None:
    for source in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            elif isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            else:
                continue
            for module in modules:
                assert module.split(".")[0] != "tests", f"{source}: imports {module}"


def test_the_python_build_takes_only_the_product() -> None:
    """pybuild (the .deb) builds the packages pyproject.toml's list finds, as setuptools'
    find does: every directory with an __init__.py whose dotted name matches."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        ".".join(init.parent.relative_to(CHECKOUT).parts)
        for init in CHECKOUT.glob("*/**/__init__.py")
        if ".venv" not in init.parts
    }
    found = {p for p in packages if any(fnmatch.fnmatchcase(p, i) for i in include)}
    assert found == {"dtenant_session"}


def test_dtenant_has_no_lab_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert "lab" not in action.choices
    with pytest.raises(SystemExit):
        cli.main(["lab", "list"])
    assert "invalid choice: 'lab'" in capsys.readouterr().err


@pytest.mark.parametrize("shipped", ["packaging/dtenant.8", "packaging/dtenant.bash-completion"])
def test_man_page_and_completion_know_no_lab(shipped: str) -> None:
    text = (CHECKOUT / shipped).read_text()
    assert not re.search(r"\blab\b", text), shipped


def test_the_lab_tool_has_its_own_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_cli.main(["exec", "no-such-lab", "--", "true"]) == 1
    err = capsys.readouterr().err
    assert err == "tests.lab: lab 'no-such-lab' is not running (see `python3 -m tests.lab list`)\n"
