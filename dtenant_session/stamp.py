"""Is a user's tenant provisioned for the current configuration? (stdlib only)

The PAM hook's hot path (pam/pam-hook.sh, in shell builtins) and provision.py apply the same
rule: the stamp /run/dtenant/stamps/USER exists, the tenant's socket exists, and neither
dtenant.toml, the drop-in directory nor any drop-in is newer than the stamp. Upgrades and
`dtenant setup` remove all stamps, so every tenant converges again at its next login.
"""

from __future__ import annotations

import os
import stat

from dtenant_session import __version__, files, paths


def _config_paths() -> list[str]:
    found = [paths.CONFIG_FILE, paths.CONFIG_DROPINS]
    try:
        names = os.listdir(paths.CONFIG_DROPINS)
    except OSError:
        return found
    return found + [os.path.join(paths.CONFIG_DROPINS, n) for n in names if n.endswith(".toml")]


def is_current(user: str) -> bool:
    try:
        stamped = os.stat(paths.stamp_path(user)).st_mtime_ns
    except OSError:
        return False
    try:
        if not stat.S_ISSOCK(os.stat(paths.socket_path(user)).st_mode):
            return False
    except OSError:
        return False
    for path in _config_paths():
        try:
            if os.stat(path).st_mtime_ns > stamped:
                return False
        except OSError:
            continue
    return True


def write(user: str) -> None:
    os.makedirs(paths.STAMPS_DIR, mode=0o700, exist_ok=True)
    # Written every time: the hook compares its mtime with the configuration's.
    files.replace(paths.stamp_path(user), f"provisioned by dtenant {__version__}\n",
                  files.PRIVATE)  # fmt: skip


def forget(user: str) -> None:
    try:
        os.unlink(paths.stamp_path(user))
    except FileNotFoundError:
        pass


def clear_all() -> int:
    """Forget every stamp (after an upgrade or a configuration change)."""
    try:
        names = os.listdir(paths.STAMPS_DIR)
    except FileNotFoundError:
        return 0
    for name in names:
        try:
            os.unlink(os.path.join(paths.STAMPS_DIR, name))
        except FileNotFoundError:
            pass
    return len(names)
