"""Tenants of version 0.1 move to a container-id block of their own, keeping their data.

0.1 mapped container root to the user's own uid (`USER:UID:1` ahead of the user's range
in /etc/subuid and /etc/subgid), which handed the user Docker's private directories. A
tenant whose registry entry has no id block yet gets one; its daemon is stopped (its
containers stop as at a host shutdown: restart policies bring them back), its files move
to the new map (idshift.py, resumable), and the lines 0.1 wrote are taken out of
/etc/subuid and /etc/subgid. Provisioning then writes everything else as for any tenant.
"""

from __future__ import annotations

from dtenant_session import idshift, lifecycle, log, ownerstamp, subid, systemd, tenant
from dtenant_session.config import Config
from dtenant_session.registry import Allocation, IdSpace, Registry

OLD_SUBID_BASE = 3_000_000_000  # 0.1's default userns.subid_base, for its slot ranges


def map_tenant(
    registry: Registry, allocation: Allocation, config: Config, ids: IdSpace
) -> Allocation:
    """Give a 0.1 tenant its id block and move its data there; returns the new allocation."""
    account = tenant.lookup(allocation.user)
    data_root = ownerstamp.data_root(allocation.user)
    # The old maps are read before anything changes the files (a resumed move has them).
    move = idshift.Move.load(data_root)
    old_uids = subid.docker_selection(subid.read(subid.SUBUID), account.uid, account.name)
    old_gids = subid.docker_selection(subid.read(subid.SUBGID), account.uid, account.name)
    _stop(allocation, config)
    lifecycle.unmount_daemon_leftovers(allocation.tenant)  # else the rename is EBUSY
    mapped = registry.map_ids(allocation.user, ids)
    block = mapped.id_base
    legacy = [d for d in idshift.state_dirs(data_root) if d != f"{block}.{block}"]
    if move is None and legacy:
        move = idshift.Move(legacy[0], old_uids, old_gids, block, account.uid, account.gid)
    if move is not None:
        idshift.run(data_root, move)
        log.log(f"data of {allocation.user} moved from {move.source} to its own container ids "
                f"{block}-{block + subid.ID_BLOCK - 1}", priority=log.NOTICE,
                user=allocation.user, step="upgrade")  # fmt: skip
    _forget_old_lines(allocation, account)
    return mapped


def _stop(allocation: Allocation, config: Config) -> None:
    """The daemon with its containers, and the socket, so nothing starts it meanwhile."""
    t = allocation.tenant
    if t.daemon_json.exists():
        lifecycle.stop_daemon(allocation, config, with_containers=True)

    async def stop_socket(bus: systemd.Bus) -> None:
        await bus.stop(t.socket_unit)

    systemd.run(stop_socket, timeout=120)


def _forget_old_lines(allocation: Allocation, account: tenant.Account) -> None:
    """0.1's own lines: the user's id ahead of its range, and a range from its slot."""
    slot_start = OLD_SUBID_BASE + (allocation.slot - 1) * subid.ID_BLOCK
    for file, own in ((subid.SUBUID, account.uid), (subid.SUBGID, account.gid)):
        lines = {f"{account.name}:{own}:1", f"{account.name}:{slot_start}:{subid.ID_BLOCK}"}

        def dropped(text: str, lines: set[str] = lines) -> str | None:
            return subid.without(text, lines)

        subid.edit(file, dropped)
