"""`dtenant registry rebuild`: a registry recovered from what is on disk.

Every tenant leaves enough behind to recover its allocation: its daemon.json (bridge,
hence slot; its network pool), its networkd file (bridge subnet) and its data-root's owner
stamp (uid). A corrupt registry is moved aside, never deleted; tenants whose files
disagree are reported, not guessed.
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from dtenant_session import desired, paths
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry, RegistryError


@dataclass
class Recovery:
    moved_aside: str = ""
    recovered: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # data of removed tenants, left as it is
    problems: list[str] = field(default_factory=list)


def from_disk(user: str) -> Allocation:
    """One tenant's allocation as its files describe it (desired.recovered)."""
    state = Path(paths.TENANTS_DIR) / user
    try:
        created = (state / "daemon.json").stat().st_mtime
    except OSError as exc:
        raise DtenantError(f"{user}: cannot recover the allocation from {state}: {exc}") from None
    try:
        allocation = desired.recovered(user, Path.read_text, created, home="")
    except desired.Unrecoverable as exc:
        raise DtenantError(str(exc)) from None
    return replace(allocation, home=_home(user, allocation.uid))


def _home(user: str, uid: int) -> str:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return ""
    return entry.pw_dir if entry.pw_uid == uid else ""


def rebuild() -> Recovery:
    recovery = Recovery()
    registry = Path(paths.REGISTRY)
    if registry.exists():
        try:
            Registry(registry).close()
            raise DtenantError(
                f"registry {registry} is readable: nothing to rebuild (move it aside first "
                "to rebuild it anyway)"
            )
        except RegistryError:
            aside = registry.with_name(f"{registry.name}.broken-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                source = Path(f"{registry}{suffix}")
                if source.exists():
                    source.rename(f"{aside}{suffix}")
            recovery.moved_aside = str(aside)
    with Registry(registry) as fresh:
        users = sorted(os.listdir(paths.TENANTS_DIR)) if os.path.isdir(paths.TENANTS_DIR) else []
        for user in users:
            if desired.removed_mark(Path(paths.TENANTS_DIR) / user).exists():
                recovery.kept.append(user)  # `dtenant remove` kept its data: not a tenant
                continue
            try:
                fresh.insert(from_disk(user))
                recovery.recovered.append(user)
            except DtenantError as exc:
                recovery.problems.append(str(exc))
    return recovery
