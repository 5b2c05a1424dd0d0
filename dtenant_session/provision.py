"""ensure(user): converge one tenant to its provisioned state; idempotent and crash-safe.

Order matters: registry allocation, files, the firewall (isolation exists before any
container of the tenant can run), networkd, then the socket. The daemon itself is not
started: the first docker command starts it through the socket.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from dtenant_session import (
    desired,
    disk,
    dockerhost,
    files,
    idmap,
    lifecycle,
    network,
    ownerstamp,
    paths,
    stamp,
    standing,
    subid,
    systemd,
    tenant,
    trusted,
    upgrade,
)
from dtenant_session.config import Config, disk_bytes
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, IdSpace, Registry


class LockTimeout(DtenantError):
    pass


@dataclass
class Outcome:
    allocation: Allocation
    already: bool = False  # nothing needed doing
    steps: list[str] = field(default_factory=list)
    seconds: float = 0.0


@contextmanager
def tenant_lock(user: str, timeout: float) -> Iterator[None]:
    """One provisioning per tenant at a time (a second login waits, then finds it done)."""
    lock = f"{paths.LOCKS_DIR}/{user}.lock"
    try:
        with files.locked(lock, timeout):
            yield
    except files.LockBusy:
        raise LockTimeout(f"user {user!r}: another provisioning holds {lock} for more than "
                          f"{timeout:g} s") from None  # fmt: skip


def _directories(wanted: desired.TenantState) -> None:
    t = wanted.allocation.tenant
    desired.removed_mark(t.state_dir).unlink(missing_ok=True)  # provisioned again
    _make_directories(wanted, (paths.STATE_DIR, paths.TENANTS_DIR))
    ownerstamp.claim(t.user, t.uid)
    make_runtime(wanted)


def make_runtime(wanted: desired.TenantState) -> None:
    """What a reboot takes of a provisioned tenant: its directories below /run (the
    daemon's unit cannot set up its namespace without them) and its activity stamp. At
    boot for every tenant: a socket may start its daemon before any login provisions."""
    _make_directories(wanted, (paths.RUN_DIR, paths.RUN_TENANTS_DIR))
    # Root's alone from the start (the reaper and the plugin only set its mtime).
    files.make_private(Path(paths.activity_path(wanted.allocation.user)), create=True)


def _make_directories(wanted: desired.TenantState, parents: tuple[str, ...]) -> None:
    """The parents, then the tenant's directories below the first of them."""
    # Root's alone on the host: a process running as the tenant's container root (a
    # set-user-ID file a container made in a bind) gets no further. The daemon sees its
    # own directories in its namespace, below traversable parents (docker@.service).
    for directory in parents:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    top = Path(parents[0])
    for own in wanted.directories:
        if top in own.path.parents:
            own.path.mkdir(mode=own.mode, exist_ok=True)
            os.chown(own.path, own.uid, own.gid, follow_symlinks=False)
            os.chmod(own.path, own.mode, follow_symlinks=False)


def id_space(config: Config) -> IdSpace:
    """Where a new tenant's container ids may go: clear of every range in /etc/subuid
    and /etc/subgid (a removed tenant's entries stay while its data is kept)."""
    ranges = [r for file in (subid.SUBUID, subid.SUBGID) for r in subid.parse(subid.read(file))]
    return IdSpace(config.userns.subid_base, tuple((r.start, r.end) for r in ranges))


def bind_roots(config: Config, account: tenant.Account) -> tuple[str, ...]:
    """The user's bind roots as real paths: the only places of the host (besides its own
    state) where the tenant's daemon may write."""
    roots = []
    for pattern in config.policy.bind_roots:
        path = pattern.replace("{home}", account.home).replace("{user}", account.name)
        resolved = trusted.owned_directory(path, account.uid)
        if resolved is not None:
            roots.append(resolved)
    return tuple(roots)


def desired_state(allocation: Allocation, config: Config, account: tenant.Account
                  ) -> desired.TenantState:  # fmt: skip
    """The tenant's desired state, with what it needs of the account looked up now."""
    facts = desired.Account(gid=account.gid, bind_roots=bind_roots(config, account))
    return desired.state(allocation, kept_disk(config, allocation), facts)


def kept_disk(config: Config, allocation: Allocation) -> Config:
    """A tenant's disk is never shrunk or taken away by a change of limits.disk_max: its
    cap is the larger of the setting and the disk it has (README, "Disk limits")."""
    try:
        size = allocation.tenant.disk_image.stat().st_size
    except FileNotFoundError:
        return config
    if disk_bytes(config.limits.disk_max) >= size:
        return config
    return replace(config, limits=replace(config.limits, disk_max=f"{size >> 20}M"))


def ensure(user: str, config: Config, *, timeout: float = 30.0, force: bool = False) -> Outcome:
    started = time.monotonic()
    account = tenant.lookup(user)
    tenant.check_eligible(account, config.eligibility)
    tenant.check_enabled(user)
    with tenant_lock(user, timeout):
        with Registry() as registry:
            allocation = registry.get(user)
            if allocation is not None and not force and stamp.is_current(user):
                return Outcome(allocation, already=True)
            renamed = None
            if allocation is None:
                renamed = _take_over(registry, account, config)
                allocation = registry.get(user)
            allocation = _own(registry, allocation, account, config)
            everyone = registry.all()
        outcome = Outcome(allocation)
        if renamed is not None:
            outcome.steps.append(f"renamed from {renamed.user}: data moved, same uid and home")
        _converge(allocation, account, everyone, config, outcome)
        dockerhost.add(user)  # its logins get DOCKER_HOST (pam_listfile reads the list)
        stamp.write(user)
    outcome.seconds = time.monotonic() - started
    return outcome


def _take_over(registry: Registry, account: tenant.Account, config: Config) -> Allocation | None:
    """A first login: the tenant this account certainly had under another name moves to
    it; any other tenant of its uid is orphaned, out of its reach (never handed over)."""
    renamed, orphans = lifecycle.claims(registry, account)
    for orphan, seen in orphans:
        lifecycle.isolate(orphan, seen.problem)
    if renamed is not None:
        lifecycle.rename(renamed, account, config, registry)
    return renamed


def _own(
    registry: Registry, allocation: Allocation | None, account: tenant.Account, config: Config
) -> Allocation:
    """The account's own tenant, made now if it has none, with its home recorded."""
    user = account.name
    if allocation is None:
        return registry.allocate(
            user, account.uid, config.network, network.routed_subnets(),
            network.bridge_slots_in_use(), home=account.home, ids=id_space(config),
        )  # fmt: skip
    if allocation.uid != account.uid:
        # The name is another account's now: the tenant is not this account's.
        lifecycle.isolate(allocation, standing.standing(allocation, account, None).problem)
        raise DtenantError(
            f"user {user!r} now has uid {account.uid} but its tenant belongs to uid "
            f"{allocation.uid}: another account of the same name, not provisioned. "
            f"{standing.advice(user)}"
        )
    if allocation.home != account.home:  # recorded at last (0.1), or moved with the same name
        registry.set_home(user, account.home)
        allocation = replace(allocation, home=account.home)
    if not allocation.id_base:
        allocation = upgrade.map_tenant(registry, allocation, config, id_space(config))
    return allocation


def _converge(
    allocation: Allocation,
    account: tenant.Account,
    everyone: list[Allocation],
    config: Config,
    outcome: Outcome,
) -> None:
    t = allocation.tenant
    wanted = desired_state(allocation, config, account)
    if idmap.ensure(t):
        outcome.steps.append(f"created {t.root_account} (uid and gid {t.id_base}), container root")
    for file in subid.reserve(t.id_base):
        outcome.steps.append(f"reserved {wanted.id_reservation} in {file}")
    _directories(wanted)
    written = [f for f in wanted.files if files.write_if_changed(f.path, f.content, f.mode)]
    outcome.steps += [f"wrote {f.path}" for f in written]
    units_changed = any(f.units for f in written)
    stale = Path(paths.SYSTEMD_DIR) / t.disk_unit
    if not wanted.disk_size and stale.exists():  # a cap removed before its disk was made
        stale.unlink()
        units_changed = True
    dropins: dict[str, list[str]] = {unit: [] for unit in (*wanted.units, *wanted.mounts)}
    dropins |= {t.service_unit: [str(t.service_dropin)], t.socket_unit: [str(t.socket_dropin)]}

    async def reload_if_needed(bus: systemd.Bus) -> None:
        if await bus.needs_reload(dropins):
            await bus.reload_daemon()

    if wanted.disk_size:
        if units_changed:  # the disk's mount unit is known before it is started
            systemd.run(reload_if_needed, timeout=config.hook.time_limit)
            units_changed = False
        outcome.steps += disk.ensure(allocation, wanted.disk_size, lambda: lifecycle.stop_daemon(
            allocation, config, with_containers=True))  # fmt: skip
    outcome.steps.append(f"firewall: {network.add_to_firewall(allocation, everyone, config)}")

    async def units(bus: systemd.Bus) -> None:
        if units_changed:  # a first login's units were never loaded: no reload
            await reload_if_needed(bus)
        # A daemon that failed before: the explanation gives the socket back, and the
        # next start is not held back by the failures that came before.
        await bus.stop(f"dtenant-daemon-failed@{t.instance}.service")
        await bus.reset_failed(t.service_unit)
        await bus.enable(list(wanted.enabled))
        for unit in wanted.enabled:
            await bus.start(unit)

    outcome.steps.append(f"bridge {t.bridge}: {network.ensure_bridge(allocation)}")
    systemd.run(units, timeout=config.hook.time_limit)
    # A socket that was listening before its drop-in existed keeps its owner: set it.
    os.chown(t.socket, t.uid, 0, follow_symlinks=False)
    outcome.steps.append(f"{t.socket_unit} enabled and listening")
