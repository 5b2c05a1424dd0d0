"""Writing files the way a crash cannot half-do: temporary file, fsync, rename."""

from __future__ import annotations

import os
from pathlib import Path


def write_if_changed(path: Path, content: str, mode: int = 0o644) -> bool:
    """Atomically replace path with content; False (and no write) when already equal."""
    try:
        if path.read_text() == content:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.dtenant-tmp")
    with temporary.open("w") as stream:
        stream.write(content)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.chmod(mode)
    temporary.replace(path)
    return True


def remove(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True
