"""The hot path's rule, in shell (pam/pam-hook.sh) and in Python (stamp.py), agree."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dtenant_session import paths, stamp

CHECKOUT = Path(__file__).resolve().parents[2]


class Host:
    """A fake root: the shell hook with its absolute paths moved below tmp_path, and
    paths.* pointed at the same places."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        for directory in ("run/dtenant/stamps", "run/dtenant/tenants/alice", "etc/dtenant"):
            (root / directory).mkdir(parents=True)
        script = (CHECKOUT / "pam" / "pam-hook.sh").read_text()
        for absolute in ("/run/dtenant", "/etc/dtenant", "/run/docker-"):
            script = script.replace(absolute, f"{root}{absolute}")
        script = script.replace("exec /usr/lib/dtenant/provision-at-login", "echo cold")
        self.hook = root / "pam-hook"
        self.hook.write_text(script)
        for name, value in {
            "CONFIG_FILE": f"{root}/etc/dtenant/dtenant.toml",
            "CONFIG_DROPINS": f"{root}/etc/dtenant/dtenant.toml.d",
            "STAMPS_DIR": f"{root}/run/dtenant/stamps",
            "RUN_TENANTS_DIR": f"{root}/run/dtenant/tenants",
        }.items():
            monkeypatch.setattr(paths, name, value)
        monkeypatch.setattr(paths, "socket_path", lambda user: f"{root}/run/docker-{user}.sock")
        monkeypatch.setattr(paths, "stamp_path", lambda user: f"{root}/run/dtenant/stamps/{user}")

    def login(self, user: str = "alice", phase: str = "open_session") -> str:
        result = subprocess.run(["/bin/sh", str(self.hook)], capture_output=True, text=True,
                                env={"PAM_USER": user, "PAM_TYPE": phase}, check=False)  # fmt: skip
        assert result.returncode == 0
        return result.stdout.strip()

    def agree(self) -> bool:
        """Both rules give the same answer; returns whether the tenant is current."""
        shell_current = self.login() == ""
        assert shell_current == stamp.is_current("alice")
        return shell_current

    def listen(self) -> None:
        """The tenant's socket, as systemd makes it."""
        self._socket = socket.socket(socket.AF_UNIX)
        self._socket.bind(str(self.root / "run/docker-alice.sock"))

    def touch(self, relative: str, offset: float = 0.0) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        if offset:
            moment = path.stat().st_mtime + offset
            os.utime(path, (moment, moment))


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    return Host(tmp_path, monkeypatch)


def test_current_only_with_stamp_socket_and_no_newer_config(host: Host) -> None:
    assert not host.agree()  # nothing provisioned
    host.touch("etc/dtenant/dtenant.toml", -10)
    stamp.write("alice")
    assert not host.agree()  # no socket
    host.listen()
    assert host.agree()


def test_a_configuration_change_sends_the_next_login_down_the_cold_path(host: Host) -> None:
    host.touch("etc/dtenant/dtenant.toml", -10)
    host.listen()
    stamp.write("alice")
    assert host.agree()
    host.touch("etc/dtenant/dtenant.toml", +5)
    assert not host.agree()
    stamp.write("alice")
    host.touch("etc/dtenant/dtenant.toml.d/50-local.toml", +5)
    assert not host.agree()
    stamp.write("alice")
    host.touch("etc/dtenant/dtenant.toml.d/50-local.toml", -20)  # moved in, old mtime
    os.utime(host.root / "etc/dtenant/dtenant.toml.d", None)
    os.utime(host.root / "run/dtenant/stamps/alice", (1, 1))
    assert not host.agree()


def test_setup_forgets_every_stamp(host: Host) -> None:
    host.listen()
    stamp.write("alice")
    assert stamp.clear_all() == 1
    assert not host.agree()


def test_root_odd_names_and_other_phases_do_nothing(host: Host) -> None:
    for user in ("", "root", "../etc", ".hidden", "-x"):
        assert host.login(user) == ""
    assert host.login(phase="open_session") == "cold"
    assert host.login(phase="authenticate") == ""


def test_logout_does_nothing(host: Host) -> None:
    """Root never runs with the PAM environment of a logout; the reaper sees sessions."""
    assert host.login(phase="close_session") == ""
    assert not (host.root / "run/dtenant/tenants/alice/activity").exists()


def test_cold_path_ignores_other_phases_and_root() -> None:
    code = (f"import sys; sys.path.insert(0, {str(CHECKOUT)!r}); "
            "from dtenant_session.login import main; sys.exit(main())")  # fmt: skip
    for env in ({"PAM_TYPE": "close_session", "PAM_USER": "alice"},
                {"PAM_TYPE": "open_session", "PAM_USER": "root"}):  # fmt: skip
        result = subprocess.run([sys.executable, "-I", "-S", "-c", code], env=env,
                                capture_output=True, check=False)  # fmt: skip
        assert (result.returncode, result.stdout, result.stderr) == (0, b"", b"")
