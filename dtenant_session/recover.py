"""`dtenant registry rebuild`: a registry recovered from what is on disk.

Every tenant leaves enough behind to recover its allocation: its daemon.json (bridge,
hence slot; its network pool), its networkd file (bridge subnet) and its data-root's owner
stamp (uid). A corrupt registry is moved aside, never deleted; tenants whose files
disagree are reported, not guessed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pwd
import time
from dataclasses import dataclass, field
from pathlib import Path

from dtenant_session import paths, subid, verify
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry, RegistryError


@dataclass
class Recovery:
    moved_aside: str = ""
    recovered: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def from_disk(user: str) -> Allocation:
    """One tenant's allocation as its files describe it."""
    state = Path(paths.TENANTS_DIR) / user
    try:
        daemon = json.loads((state / "daemon.json").read_text())
        bridge = daemon["bridge"]
        pool = daemon["default-address-pools"][0]["base"]
        slot = int(bridge.removeprefix("dtenant"))
        network = Path(paths.NETWORKD_DIR) / f"60-{bridge}.network"
        address = next(line.split("=", 1)[1] for line in network.read_text().splitlines()
                       if line.startswith("Address="))  # fmt: skip
        with open(os.path.join(verify.data_root(user), verify.OWNER_STAMP)) as stream:
            uid = int(json.load(stream)["uid"])
    except (OSError, ValueError, KeyError, IndexError, StopIteration) as exc:
        raise DtenantError(f"{user}: cannot recover the allocation from {state}: {exc}") from None
    subnet = str(ipaddress.IPv4Interface(address.strip()).network)
    created = (state / "daemon.json").stat().st_mtime
    return Allocation(user, uid, slot, subnet, pool, created, _home(user, uid),
                      _id_base(daemon.get("userns-remap", "")))  # fmt: skip


def _id_base(remap: str) -> int:
    """The tenant's container ids, from the account its daemon.json names (0 for 0.1's
    daemon.json, which named the user: that tenant is moved at the next setup)."""
    account = remap.split(":", 1)[0]
    if not account.startswith("_dtenant"):
        return 0
    try:
        return pwd.getpwnam(account).pw_uid
    except KeyError:
        return int(account.removeprefix("_dtenant")) * subid.ID_BLOCK


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
            try:
                fresh.insert(from_disk(user))
                recovery.recovered.append(user)
            except DtenantError as exc:
                recovery.problems.append(str(exc))
    return recovery
