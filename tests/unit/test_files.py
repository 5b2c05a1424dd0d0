from __future__ import annotations

import os
import stat
from pathlib import Path

from dtenant_session import files
from dtenant_session.registry import Registry


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_file_is_never_readable_by_others(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    old = os.umask(0)
    try:
        assert files.write_if_changed(target, "{}\n", mode=files.PRIVATE)
    finally:
        os.umask(old)
    assert _mode(target) == 0o600


def test_a_wider_mode_is_narrowed_even_when_the_content_is_the_same(tmp_path: Path) -> None:
    target = tmp_path / "daemon.json"
    target.write_text("{}\n")
    target.chmod(0o644)  # as earlier versions wrote it
    assert files.write_if_changed(target, "{}\n", mode=files.PRIVATE)
    assert _mode(target) == 0o600
    assert not files.write_if_changed(target, "{}\n", mode=files.PRIVATE)


def test_a_leftover_temporary_does_not_lend_its_mode(tmp_path: Path) -> None:
    leftover = tmp_path / ".daemon.json.dtenant-tmp"
    leftover.write_text("half")
    leftover.chmod(0o666)
    files.write_if_changed(tmp_path / "daemon.json", "{}\n", mode=files.PRIVATE)
    assert _mode(tmp_path / "daemon.json") == 0o600


def test_make_private(tmp_path: Path) -> None:
    target = tmp_path / "stamp"
    assert not files.make_private(target)  # nothing there: nothing made
    assert not target.exists()
    target.write_text("x")
    target.chmod(0o644)
    assert files.make_private(target)
    assert _mode(target) == 0o600
    assert not files.make_private(target)


def test_the_registry_and_its_wal_are_root_s_alone(tmp_path: Path) -> None:
    path = tmp_path / "registry.sqlite3"
    with Registry(path):
        pass
    assert _mode(path) == 0o600
    path.chmod(0o644)  # as earlier versions left it
    with Registry(path) as registry:
        registry.all()
        assert _mode(path) == 0o600
        for suffix in ("-wal", "-shm"):
            sidecar = path.with_name(path.name + suffix)
            assert not sidecar.exists() or _mode(sidecar) == 0o600


def test_a_symlink_in_the_place_of_a_file_is_replaced_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("same\n")
    target.chmod(0o644)
    link = tmp_path / "list"
    link.symlink_to(target)
    assert files.write_if_changed(link, "same\n", 0o644)  # same content, yet replaced
    assert not link.is_symlink() and link.read_text() == "same\n"
    assert target.read_text() == "same\n"


def test_concurrent_replaces_of_one_file_never_fail(tmp_path: Path) -> None:
    """Two writers at once (the reaper's timer and a manual `dtenant reap`, both
    remembering the settings) each have a temporary of their own."""
    import threading

    target = tmp_path / "settings.json"
    errors: list[BaseException] = []

    def write(text: str) -> None:
        try:
            for _ in range(300):
                files.replace(target, text)
        except OSError as exc:
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(t,)) for t in ("a", "b")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert errors == []
    assert target.read_text() in ("a", "b")
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]
