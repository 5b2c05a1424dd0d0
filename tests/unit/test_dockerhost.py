"""The list of users who get DOCKER_HOST: what setup keeps, what logins add and take off."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dtenant_session import dockerhost, paths


@pytest.fixture
def listfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(paths, "DOCKER_HOST_USERS", str(tmp_path / "docker-host-users"))
    monkeypatch.setattr(paths, "LOCKS_DIR", str(tmp_path / "locks"))
    monkeypatch.setattr(dockerhost, "LOCK", str(tmp_path / "locks" / ".docker-host-users.lock"))
    return tmp_path / "docker-host-users"


def test_setup_keeps_the_eligible_among_the_listed_and_the_registered() -> None:
    verdicts = {"alice": True, "bob": False, "carol": True, "gone": False}
    kept = dockerhost.decide({"alice", "bob", "gone"}, {"carol", "bob"}, verdicts)
    assert kept == {"alice", "carol"}


def test_a_name_listed_while_setup_decided_stays() -> None:
    """A login put it on the list after setup read it: that login found it eligible."""
    assert dockerhost.decide({"alice", "late"}, set(), {"alice": True}) == {"alice", "late"}


def test_logins_add_and_take_off_their_own_user(listfile: Path) -> None:
    assert dockerhost.read() == set()  # no list yet: nobody
    dockerhost.add("alice")
    dockerhost.add("4242")
    dockerhost.add("alice")
    assert listfile.read_text() == "4242\nalice\n"
    # pam_listfile refuses a list others may write; root's alone to change.
    assert stat.S_IMODE(listfile.stat().st_mode) == 0o644
    dockerhost.discard("alice")
    dockerhost.discard("nobody-listed")
    assert listfile.read_text() == "4242\n"


def test_rewrite_decides_every_name_again(listfile: Path) -> None:
    listfile.write_text("alice\nbob\n")
    kept = dockerhost.rewrite(["carol", "dave"], lambda name: name in {"alice", "carol"})
    assert kept == {"alice", "carol"}
    assert listfile.read_text() == "alice\ncarol\n"


def test_a_list_pam_listfile_would_refuse_is_named() -> None:
    def seen(mode: int, uid: int = 0) -> os.stat_result:
        return os.stat_result((mode, 0, 0, 1, uid, 0, 0, 0, 0, 0))

    assert dockerhost.unsafe(seen(stat.S_IFREG | 0o644)) is None
    assert "missing" in (dockerhost.unsafe(None) or "")
    assert "not a regular file" in (dockerhost.unsafe(seen(stat.S_IFLNK | 0o777)) or "")
    assert "mode 666" in (dockerhost.unsafe(seen(stat.S_IFREG | 0o666)) or "")
    assert "uid 1000" in (dockerhost.unsafe(seen(stat.S_IFREG | 0o644, uid=1000)) or "")
