"""The login hook's hot path: is this user's tenant provisioned for the current config?

Standard library only, and only stat/read calls: this runs on every login.
"""

from __future__ import annotations

import os
from pathlib import Path

from dtenant_session import __version__, paths


def generation(main: Path = paths.CONFIG_FILE, dropins: Path = paths.CONFIG_DROPINS) -> str:
    """Changes whenever dtenant is upgraded or a config file is added, removed or edited."""
    parts = [__version__]
    candidates = [main]
    try:
        candidates += sorted(dropins / n for n in os.listdir(dropins) if n.endswith(".toml"))
    except OSError:
        pass
    for file in candidates:
        try:
            st = os.stat(file)
        except OSError:
            continue
        parts.append(f"{file}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def is_current(user: str, current: str) -> bool:
    """The tenant was provisioned for `current` and its socket is listening."""
    try:
        with open(paths.stamp_path(user)) as stream:
            if stream.read() != current:
                return False
    except OSError:
        return False
    return paths.socket_path(user).exists()


def write(user: str, current: str) -> None:
    paths.STAMPS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = paths.stamp_path(user)
    temporary = stamp.with_name(f".{user}.tmp")
    temporary.write_text(current)
    temporary.replace(stamp)


def clear(user: str) -> None:
    try:
        paths.stamp_path(user).unlink()
    except FileNotFoundError:
        pass
