"""What the programs on every login, every daemon start and every API request import:
the standard library and a few of dtenant's own modules, nothing else (each import costs
start-up time on those paths, and a third-party module would put its bugs there)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
for name in sys.argv[2:]:
    __import__(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""
OWN = "dtenant_session"


@pytest.mark.parametrize(
    ("program", "modules", "allowed"),
    [
        # the PAM hook's cold path (libexec/provision-at-login)
        ("login", ["dtenant_session.login"], {"login", "config", "errors", "paths", "policy",
                                              "trusted"}),
        # the pre-start check in a process of its own (libexec/check-tenant-direct)
        ("check-tenant-direct", ["dtenant_session.prestart"],
         {"prestart", "dbread", "disabled", "files", "mountinfo", "ownerstamp", "paths",
          "treewalk"}),
        # the authorization plugin, with what it loads for its first request (the
        # configuration is read in a child process: authz.read_settings)
        ("authz", ["dtenant_session.authz", "dtenant_session.policy"],
         {"authz", "activation", "activity", "dockerapi", "log", "paths", "policy"}),
        # that child
        ("authz settings", ["dtenant_session.authz", "dtenant_session.config"],
         {"authz", "activation", "activity", "config", "dockerapi", "errors", "log", "paths",
          "policy", "trusted"}),
    ],
)  # fmt: skip
def test_hot_programs_import_only_the_standard_library(
    program: str, modules: list[str], allowed: set[str]
) -> None:
    loaded = json.loads(subprocess.run([sys.executable, "-I", "-c", PROBE, str(CHECKOUT),
                                        *modules], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    foreign = [m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names | {OWN}]
    assert foreign == [], f"{program} imports {foreign}"
    own = {m.removeprefix(f"{OWN}.") for m in loaded if m.startswith(f"{OWN}.")}
    assert own == allowed, f"{program} imports {sorted(own - allowed)} beyond what it did"


def test_the_authorization_plugin_loads_no_heavy_module() -> None:
    """Every tenant runs a plugin: what it imports is memory of every active tenant's
    (http.client alone brings ssl, libcrypto and the email package, ~5 MiB; the
    configuration's reading typing, tomllib and pathlib, ~2 MiB: a child reads it;
    dataclasses brings inspect, ast and dis, ~1 MiB)."""
    modules = ["dtenant_session.authz", "dtenant_session.policy", "dtenant_session.dockerapi"]
    loaded = json.loads(subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(CHECKOUT),
                                        *modules], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    heavy = {"ssl", "email", "http", "typing", "tomllib", "pathlib", "dataclasses", "inspect",
             "ast", "dis"}  # fmt: skip
    assert sorted(m for m in loaded if m.split(".")[0] in heavy) == []


def test_the_pre_start_check_loads_no_dataclasses_and_no_pathlib() -> None:
    """It runs before every daemon start: dataclasses (with inspect and ast) and pathlib
    were ~8 ms of its ~50."""
    modules = ["dtenant_session.prestart", "dtenant_session.egress", "dtenant_session.subid",
               "dtenant_session.command"]  # fmt: skip
    loaded = json.loads(subprocess.run([sys.executable, "-I", "-S", "-c", PROBE, str(CHECKOUT),
                                        *modules], capture_output=True, text=True,
                                       check=True).stdout)  # fmt: skip
    assert sorted(m for m in loaded if m in {"dataclasses", "inspect", "pathlib"}) == []
