"""Reading the registry read-only: exact, and never from an older file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dtenant_session import dbread


def _registry(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.execute("INSERT INTO t VALUES (1)")
    return db


def test_reads_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    _registry(path).close()  # the last connection checkpoints: the log is empty
    assert dbread.log_is_empty(str(path))
    with dbread.connect(str(path)) as db:
        assert db.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_commits_still_in_the_log_are_read_or_it_fails(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    writer = _registry(path)  # open: the commit is in the log, not the file
    try:
        assert not dbread.log_is_empty(str(path))
        with dbread.connect(str(path)) as db:
            assert db.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        writer.close()


def test_no_registry_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(sqlite3.OperationalError):
        dbread.connect(str(tmp_path / "missing.sqlite3"))
