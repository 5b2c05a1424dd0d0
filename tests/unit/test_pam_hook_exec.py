"""pam/pam-hook-exec.c, the PAM hook's first program: what it passes on to the script.

Built here with a stand-in script that prints its environment (the installed program's
script path is fixed at build time; tests/sandbox/test_environment.py checks that one).
Environments are handed over with execve itself, so they can hold a name twice, as
pam_exec's do when the PAM environment already has PAM_USER or PAM_TYPE.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECKOUT = Path(__file__).resolve().parents[2]
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
EXECVE = """
import ctypes, sys
def strings(items):
    return (ctypes.c_char_p * (len(items) + 1))(*[item.encode() for item in items], None)
program = sys.argv[1]
ctypes.CDLL(None).execve(program.encode(), strings([program]), strings(sys.argv[2:]))
sys.exit(99)
"""


@pytest.fixture(scope="module")
def hook(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (tests/setup-host installs gcc and libc6-dev)")
    build = tmp_path_factory.mktemp("hook")
    (build / "stand-in.sh").write_text("/usr/bin/env\n")
    program = build / "pam-hook"
    subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-static-pie",
                    f'-DSCRIPT="{build / "stand-in.sh"}"', "-o", str(program),
                    str(CHECKOUT / "pam" / "pam-hook-exec.c")], check=True)  # fmt: skip
    return program


def _run(hook: Path, *environment: str) -> dict[str, str] | None:
    """The stand-in's environment, or None when the hook did not run it."""
    result = subprocess.run([sys.executable, "-c", EXECVE, str(hook), *environment],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert (result.returncode, result.stderr) == (0, "")
    if not result.stdout:
        return None
    return dict(line.split("=", 1) for line in result.stdout.splitlines())


def test_only_pam_user_pam_type_and_a_fixed_path_get_through(hook: Path) -> None:
    seen = _run(hook, "LD_PRELOAD=/home/eve/evil.so", "LD_AUDIT=/home/eve/evil.so",
                "LD_LIBRARY_PATH=/home/eve", "GCONV_PATH=/home/eve", "PATH=/home/eve/bin",
                "PYTHONPATH=/home/eve", "ENV=/home/eve/x.sh", "IFS=/",
                "PAM_USER=alice", "PAM_TYPE=open_session")  # fmt: skip
    assert seen == {"PAM_USER": "alice", "PAM_TYPE": "open_session", "PATH": PATH, "PWD": "/"}


def test_pam_exec_s_own_values_come_last_and_win(hook: Path) -> None:
    seen = _run(hook, "PAM_USER=bob", "PAM_TYPE=open_session",
                "PAM_USER=alice", "PAM_TYPE=close_session")  # fmt: skip
    assert seen is not None
    assert (seen["PAM_USER"], seen["PAM_TYPE"]) == ("alice", "close_session")


def test_odd_values_run_nothing(hook: Path) -> None:
    for user in ("", "a/b", "../etc", "a\nb", "a\x1bb", "a\x7fb", "x" * 33):
        assert _run(hook, f"PAM_USER={user}", "PAM_TYPE=open_session") is None, repr(user)
    assert _run(hook, "PAM_TYPE=open_session") is None
    assert _run(hook, "PAM_USER=alice") is None
    assert _run(hook) is None
    assert _run(hook, "PAM_USER=" + "x" * 32, "PAM_TYPE=open_session") is not None
