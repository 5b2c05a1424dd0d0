"""A tenant's life beyond provisioning: stopping its daemon, renaming, removing.

Nothing here deletes a tenant's images, volumes or containers, except `remove` with
purge=True, which the administrator asked for by name.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
from pathlib import Path

from dtenant_session import (
    command,
    files,
    log,
    mountinfo,
    network,
    paths,
    render,
    stamp,
    systemd,
    treewalk,
    verify,
)
from dtenant_session.config import Config
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry
from dtenant_session.tenant import Tenant

REMOVED_MARK = "REMOVED"


def stop_daemon(allocation: Allocation, config: Config, *, with_containers: bool) -> None:
    """Stop the tenant's daemon; its socket keeps listening. Its containers stop with it
    (they run under its own containerd) and their restart policies apply at its next
    start. A daemon of version 0.1 (live-restore, the host's containerd) is stopped as a
    host shutdown would stop it when with_containers is set: live-restore off first."""
    t = allocation.tenant
    original = t.daemon_json.read_text()
    settings = json.loads(original)
    if not (with_containers and settings.get("live-restore")):

        async def stop(bus: systemd.Bus) -> None:
            await bus.stop(t.service_unit)

        systemd.run(stop, timeout=300)
        return
    # The daemon's own file with one change: what it holds stays exactly as it was.
    files.write_if_changed(t.daemon_json, render.json_text({**settings, "live-restore": False}),
                           mode=files.PRIVATE)  # fmt: skip
    try:

        async def reload_and_stop(bus: systemd.Bus) -> None:
            units = await bus.units([t.service_unit])
            if t.service_unit in units and units[t.service_unit].active == "active":
                # A signal, not ReloadUnit: the unit file may have changed under the
                # running daemon (a package upgrade), and its ExecReload= could not start.
                await bus.signal_main(t.service_unit, signal.SIGHUP)
                await asyncio.sleep(1.0)  # dockerd reloads its file asynchronously
            await bus.stop(t.service_unit)

        systemd.run(reload_and_stop, timeout=300)
    finally:
        files.write_if_changed(t.daemon_json, original, mode=files.PRIVATE)


def _release_units(t: Tenant) -> None:
    """Stop and disable every unit of the tenant (the daemon already stopped)."""

    async def release(bus: systemd.Bus) -> None:
        for unit in (t.service_unit, t.socket_unit, f"dtenant-authz@{t.instance}.service",
                     f"dtenant-authz@{t.instance}.socket"):  # fmt: skip
            await bus.stop(unit)
        await bus.disable([t.socket_unit])

    systemd.run(release, timeout=120)


def _name_resolves(user: str, uid: int) -> bool:
    try:
        return pwd.getpwnam(user).pw_uid == uid
    except KeyError:
        return False


def renamed_from(registry: Registry, user: str, uid: int) -> Allocation | None:
    """The tenant this account had under its former name (same uid, old name gone)."""
    for allocation in registry.by_uid(uid):
        if allocation.user != user and not _name_resolves(allocation.user, uid):
            return allocation
    return None


def rename(old: Allocation, new_user: str, config: Config, registry: Registry) -> None:
    """Carry a renamed account's tenant over: daemon stopped cleanly, data moved, registry
    and owner stamp updated; the caller provisions the new name."""
    stop_daemon(old, config, with_containers=True)
    _release_units(old.tenant)
    stamp.forget(old.user)
    source, target = Path(paths.TENANTS_DIR) / old.user, Path(paths.TENANTS_DIR) / new_user
    if target.exists():
        raise DtenantError(f"cannot rename tenant {old.user} to {new_user}: {target} exists")
    source.rename(target)  # same filesystem: a rename, the data stays where it is
    treewalk.remove_tree(f"{paths.RUN_TENANTS_DIR}/{old.user}")  # volatile: what stays, stays
    verify.rewrite_owner_stamp(new_user, old.uid)
    registry.rename(old.user, new_user)
    log.log(f"tenant {old.user} renamed to {new_user} (uid {old.uid}); data moved to {target}",
            priority=log.NOTICE, user=new_user, step="rename")  # fmt: skip


def unmount_daemon_leftovers(t: Tenant) -> None:
    """dockerd bind-mounts its user-namespace root (DATA-ROOT/UID.GID) onto itself and
    leaves that mount behind when it stops. Only mounts whose parents are all root's
    (the data-root and its direct children) are undone: a mount point deeper down sits
    in what the tenant controls, and is left alone and named by the removal."""
    ours = (str(t.state_dir), str(t.data_root))
    for mount in reversed(mountinfo.under(mountinfo.read(), str(t.data_root))):
        if os.path.dirname(mount.mount_point) in ours or mount.mount_point in ours:
            command.run([command.which("umount"), mount.mount_point], check=False, timeout=30)


def _purge(t: Tenant) -> str:
    """Delete the tenant's data however it is shaped (treewalk); what cannot go is named."""
    unmount_daemon_leftovers(t)
    result = treewalk.remove_tree(str(t.state_dir))
    if result.error_count:
        raise DtenantError(f"tenant {t.user} removed, but not all of {t.state_dir} could be "
                           f"deleted: {result.summary()}")  # fmt: skip
    return f"deleted {t.state_dir}: its images, containers and volumes"


def remove(user: str, config: Config, *, purge: bool) -> list[str]:
    """Take a tenant away: units, bridge, firewall entries, registry entry; its data only
    with purge. Returns what was done."""
    with Registry() as registry:
        allocation = registry.get(user)
        if allocation is None:
            raise DtenantError(f"{user!r} is not a registered tenant (see `dtenant status`)")
        t = allocation.tenant
        steps = []
        stop_daemon(allocation, config, with_containers=True)
        steps.append(f"stopped {t.service_unit} and its containers")
        _release_units(t)
        steps.append(f"stopped and disabled {t.socket_unit} and its authorization plugin")
        network.remove_bridge_files(allocation)
        command.run([command.which("ip"), "link", "delete", t.bridge], check=False, timeout=10)
        steps.append(f"removed bridge {t.bridge} and its networkd files")
        registry.remove(user)
        network.sync_firewall(registry.all(), config)
        steps.append("removed its firewall entries and its registry entry")
    stamp.forget(user)
    t.socket.unlink(missing_ok=True)
    treewalk.remove_tree(str(t.run_dir))
    if purge:
        steps.append(_purge(t))
    else:
        # Kept on purpose: `dtenant verify` does not count it as a lost tenant.
        (t.state_dir / REMOVED_MARK).write_text(f"removed by `dtenant remove {user}`\n")
        steps.append(f"kept {t.state_dir} (`dtenant provision {user}` would use it again)")
    log.log(f"tenant removed{' with its data' if purge else ''}", priority=log.NOTICE,
            user=user, step="remove")  # fmt: skip
    return steps
