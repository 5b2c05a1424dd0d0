"""Reading the registry where nothing can be written (a full disk): standard library only.

SQLite opens a database in WAL mode only with its shared-memory file (REGISTRY-shm),
even to read, and makes that file when it is missing: on a full disk that fails ("disk
I/O error"). When the write-ahead log holds nothing, the database file alone is the
whole registry, and SQLite can read it as an immutable file (no -shm, no locks). With
commits still in the log that would be an older registry, so the error stands.
"""

from __future__ import annotations

import os
import sqlite3


def log_is_empty(path: str) -> bool:
    """Nothing waits in path's write-ahead log (missing or empty)."""
    try:
        return os.stat(f"{path}-wal").st_size == 0
    except FileNotFoundError:
        return True


def connect(path: str, timeout: float = 5.0) -> sqlite3.Connection:
    """A read-only connection to the database at path that has read its schema; on a
    disk with no room for the -shm file, the database file read as immutable."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError:
        db.close()
        if not log_is_empty(path):
            raise
    else:
        return db
    db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=timeout)
    db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    return db
