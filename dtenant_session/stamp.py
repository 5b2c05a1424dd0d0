"""The login hook's hot path: is this user's tenant provisioned for the current config?

Standard library only (os), and only stat/read calls: this runs on every login.
"""

from __future__ import annotations

import os

from dtenant_session import __version__, paths


def generation(main: str = paths.CONFIG_FILE, dropins: str = paths.CONFIG_DROPINS) -> str:
    """Changes whenever dtenant is upgraded or a config file is added, removed or edited."""
    parts = [__version__]
    candidates = [main]
    try:
        names = sorted(n for n in os.listdir(dropins) if n.endswith(".toml"))
        candidates += [os.path.join(dropins, n) for n in names]
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
    return os.path.exists(paths.socket_path(user))


def write(user: str, current: str) -> None:
    os.makedirs(paths.STAMPS_DIR, exist_ok=True)
    temporary = os.path.join(paths.STAMPS_DIR, f".{user}.tmp")
    with open(temporary, "w") as stream:
        stream.write(current)
    os.replace(temporary, paths.stamp_path(user))


def clear(user: str) -> None:
    try:
        os.unlink(paths.stamp_path(user))
    except FileNotFoundError:
        pass
