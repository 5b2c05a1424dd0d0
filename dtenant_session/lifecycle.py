"""A tenant's life beyond provisioning: stopping its daemon, renaming, removing.

Nothing here deletes a tenant's images, volumes or containers, except `remove` with
purge=True, which the administrator asked for by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from dtenant_session import (
    activity,
    bootstart,
    command,
    daemonstop,
    desired,
    disabled,
    dockerapi,
    dockerhost,
    files,
    freezer,
    log,
    mountinfo,
    move,
    network,
    ownerstamp,
    paths,
    render,
    stamp,
    standing,
    systemd,
    tenant,
    treewalk,
)
from dtenant_session.config import Config
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry
from dtenant_session.tenant import Account, Tenant

Orphan = tuple[Allocation, standing.Standing]


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
            await _deliberate(bus, t)

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
                await _live_restore_off(t.user)
            await bus.stop(t.service_unit)
            await _deliberate(bus, t)

        systemd.run(reload_and_stop, timeout=300)
    finally:
        files.write_if_changed(t.daemon_json, original, mode=files.PRIVATE)


IDLE_STOP_SECONDS = 120.0  # a daemon without containers stops in a second or two


def stop_idle_daemon(allocation: Allocation, still_idle: Callable[[freezer.Frozen], bool]) -> bool:
    """Stop a daemon that runs no container, unless still_idle() says it was used again;
    False when it was kept. The last look is taken with the daemon frozen (freezer.py): it
    accepts nothing meanwhile, so whoever connects after the look waits in the socket's
    queue, which systemd keeps, and is served whole by the next start. Found idle, with
    no container either, it is killed where it stands and never runs again: systemd
    counts that as a stop, not a failure (SuccessExitStatus=SIGKILL), and ExecStop= and
    ExecStopPost= still run after it, with nothing left to stop."""
    t = allocation.tenant

    async def stop(bus: systemd.Bus) -> bool:
        pid = await bus.main_pid(t.service_unit)
        group = (await bus.control_groups([t.service_unit])).get(t.service_unit)
        if not pid or not group:
            return True  # it stopped by itself meanwhile
        with _process(pid) as exited:
            with freezer.frozen(group) as daemon:
                if daemonstop.orphan_scopes(os.path.dirname(group)) or not still_idle(daemon):
                    return False
                daemon.kill()
            if not await asyncio.to_thread(exited, IDLE_STOP_SECONDS):
                raise DtenantError(f"the daemon (pid {pid}) did not exit once killed")
        await _stopped(bus, t.service_unit, pid)
        await _deliberate(bus, t)
        return True

    return systemd.run(stop, timeout=IDLE_STOP_SECONDS + 60)


async def _stopped(bus: systemd.Bus, unit: str, pid: int) -> None:
    """Until systemd is done with the stop of the daemon that was pid (ExecStop=,
    ExecStopPost=); a client waiting in the queue may start the next one at once."""
    deadline = asyncio.get_running_loop().time() + IDLE_STOP_SECONDS
    while asyncio.get_running_loop().time() < deadline:
        state = (await bus.units([unit])).get(unit)
        if state is None or (state.active != "deactivating" and await bus.main_pid(unit) != pid):
            return
        await asyncio.sleep(0.05)


@contextlib.contextmanager
def _process(pid: int) -> Iterator[Callable[[float], bool]]:
    """A process held by a pidfd (never another one that gets its pid): yields a wait
    for its exit within so many seconds."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield lambda _seconds: True
        return
    try:
        yield lambda seconds: bool(select.select([pidfd], [], [], seconds)[0])
    finally:
        os.close(pidfd)


async def _deliberate(bus: systemd.Bus, t: Tenant) -> None:
    """A stop dtenant made on purpose does not count towards the daemon's start limit
    (ResetFailed resets it): the user's next command starts it, however many stops came
    in the last minute."""
    await bus.reset_failed(t.service_unit)


async def _live_restore_off(user: str, timeout: float = 20.0) -> None:
    """Wait until the daemon has reloaded its file (it does so asynchronously): stopped
    before, it would leave its containers running."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            info = json.loads(await asyncio.to_thread(dockerapi.get, user, "/info", timeout=5))
            if info.get("LiveRestoreEnabled") is False:
                return
        except (OSError, ValueError):
            pass
        await asyncio.sleep(0.2)
    log.log("the daemon did not turn live-restore off in time; stopping it anyway",
            priority=log.WARNING, user=user, step="stop")  # fmt: skip


def _release_units(allocation: Allocation) -> None:
    """Stop and disable every unit of the tenant (the daemon already stopped)."""
    layout = desired.layout(allocation)

    async def release(bus: systemd.Bus) -> None:
        for unit in layout.units:
            await bus.stop(unit)
        for mount in layout.mounts:  # its disk (limits.disk_max), if it has one
            with contextlib.suppress(systemd.BusError):
                await bus.stop(mount)
        await bus.disable(list(layout.enabled))

    systemd.run(release, timeout=120)


def _forget_unit_files(allocation: Allocation) -> None:
    """The tenant's unit drop-ins (the socket's names its owner's uid) go with its name."""
    for file in desired.layout(allocation).files:
        if file.units:
            _remove_host_file(file.path)


def _remove_host_file(path: Path) -> None:
    path.unlink(missing_ok=True)
    if path.parent.name.endswith(".d"):  # a drop-in directory, unless someone else's is in it
        with contextlib.suppress(OSError):
            path.parent.rmdir()


def isolate(allocation: Allocation, problem: str) -> None:
    """An orphaned tenant: its socket unreachable at once, and its daemon (its containers
    stop with it), socket and plugin stopped and disabled, so the account that now has
    its name or uid never reaches its daemon or data; its socket, if ever started by hand,
    is root's. The data stays, for the administrator. The stops are queued, not waited
    for: a login must not wait for containers to stop."""
    t = allocation.tenant
    kept = (f"tenant {t.user} is orphaned. Its socket is removed, its daemon, containers "
            f"and units stop and stay disabled, its data stays in {t.state_dir}")  # fmt: skip
    log.log(f"{problem}: {kept}. {standing.advice(t.user)}", priority=log.WARNING,
            user=t.user, step="orphan")  # fmt: skip
    stamp.forget(t.user)
    t.socket.unlink(missing_ok=True)  # nobody connects to a path that is gone
    _forget_unit_files(allocation)
    layout = desired.layout(allocation)

    async def release(bus: systemd.Bus) -> None:
        await bus.reload_daemon()
        await bus.disable(list(layout.enabled))
        for unit in layout.units:
            await bus.stop_later(unit)

    systemd.run(release, timeout=30)


def standing_now(allocation: Allocation, registered: set[str]) -> standing.Standing:
    """How the tenant stands against the accounts NSS gives now (registered: every tenant's
    name, to tell a holder of its uid that has a tenant of its own)."""
    by_name = tenant.by_name(allocation.user)
    holder = None
    if by_name is None or by_name.uid != allocation.uid:
        holder = tenant.by_uid(allocation.uid)
    if holder is not None and holder.name == allocation.user:
        holder = None
    has_tenant = holder is not None and holder.name in registered
    return standing.standing(allocation, by_name, holder, holder_registered=has_tenant)


def reachable(t: Tenant) -> bool:
    """Its socket exists or comes back at boot."""
    wants = f"/etc/systemd/system/sockets.target.wants/{t.socket_unit}"
    return t.socket.exists() or os.path.lexists(wants)


def claims(registry: Registry, account: Account) -> tuple[Allocation | None, list[Orphan]]:
    """For an account without a tenant: the tenant it certainly had under another name,
    and the tenants of its uid that are orphaned (standing.claims)."""
    found = [(a, tenant.by_name(a.user)) for a in registry.by_uid(account.uid)]
    return standing.claims(account, found)


def rename(old: Allocation, new: Account, config: Config, registry: Registry) -> None:
    """Carry a tenant over to another account: daemon stopped cleanly, data moved, registry
    (name, uid, home) and owner stamp updated; the caller provisions the new name."""
    source, target = Path(paths.TENANTS_DIR) / old.user, Path(paths.TENANTS_DIR) / new.name
    if target.exists():
        raise DtenantError(f"cannot rename tenant {old.user} to {new.name}: {target} exists "
                           f"(a removed tenant's data? move it away first)")  # fmt: skip
    stop_daemon(old, config, with_containers=True)
    _release_units(old)
    stamp.forget(old.user)
    _forget_unit_files(old)
    source.rename(target)  # same filesystem: a rename, the data stays where it is
    treewalk.remove_tree(f"{paths.RUN_TENANTS_DIR}/{old.user}")  # volatile: what stays, stays
    ownerstamp.rename(new.name, new.uid)
    registry.rename(old.user, new.name, uid=new.uid, home=new.home)
    log.log(f"tenant {old.user} (uid {old.uid}) renamed to {new.name} (uid {new.uid}, home "
            f"{new.home}); data moved to {target}", priority=log.NOTICE, user=new.name,
            step="rename")  # fmt: skip


def rename_as_asked(old_name: str, new_name: str, config: Config) -> list[str]:
    """`dtenant rename OLD NEW`: the administrator hands OLD's tenant to the existing
    account NEW (standing.rename_refusal says when not), then NEW is provisioned."""
    from dtenant_session import provision  # it imports this module

    new = tenant.lookup(new_name)
    tenant.check_eligible(new, config.eligibility)
    first, second = sorted({old_name, new_name})
    with (
        provision.tenant_lock(first, 30),
        provision.tenant_lock(second, 30),
        Registry() as registry,
    ):
        old = registry.get(old_name)
        refusal = standing.rename_refusal(old_name, old, tenant.by_name(old_name), new,
                                          registry.get(new_name) is not None)  # fmt: skip
        if refusal is not None or old is None:
            raise DtenantError(f"cannot rename {old_name} to {new_name}: {refusal}")
        rename(old, new, config, registry)
    steps = [f"stopped {old.tenant.service_unit} and its containers, disabled its units",
             f"moved {paths.TENANTS_DIR}/{old_name} to {paths.TENANTS_DIR}/{new_name}",
             f"registry and owner stamp: {new_name}, uid {new.uid}, home {new.home}"]  # fmt: skip
    outcome = provision.ensure(new_name, config, force=True)
    return [*steps, f"provisioned {new_name}: {outcome.allocation.tenant.socket}"]


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
        t, layout = allocation.tenant, desired.layout(allocation)
        steps = []
        stop_daemon(allocation, config, with_containers=True)
        steps.append(f"stopped {t.service_unit} and its containers")
        _release_units(allocation)
        steps.append(f"stopped and disabled {t.socket_unit} and its authorization plugin")
        for path in layout.host_files:
            _remove_host_file(path)
        steps.append(f"removed {', '.join(str(p) for p in layout.host_files)}")
        command.run([command.which("ip"), "link", "delete", layout.bridge], check=False,
                    timeout=10)  # fmt: skip
        steps.append(f"removed bridge {layout.bridge}")
        registry.remove(user)
        network.sync_firewall(registry.all(), config)
        steps.append("removed its firewall entries and its registry entry")
    stamp.forget(user)
    dockerhost.discard(user)
    bootstart.forget(user)
    t.socket.unlink(missing_ok=True)
    treewalk.remove_tree(str(t.run_dir))
    if purge:
        steps.append(_purge(t))
    else:
        # Kept on purpose: `dtenant verify` does not count it as a lost tenant.
        files.replace(desired.removed_mark(t.state_dir), f"removed by `dtenant remove {user}`\n",
                      files.PRIVATE)  # fmt: skip
        steps.append(f"kept {t.state_dir} (`dtenant provision {user}` would use it again)")
    if disabled.reason(user) is None:
        steps.append(f"{user}'s next login provisions a tenant again; `dtenant disable "
                     f"{user}` keeps them out")  # fmt: skip
    log.log(f"tenant removed{' with its data' if purge else ''}", priority=log.NOTICE,
            user=user, step="remove")  # fmt: skip
    return steps


def disable(user: str, why: str, config: Config) -> list[str]:
    """Keep a user from having a daemon, whatever their logins do: their daemon (and its
    containers) stops, and it does not start again; their docker commands say why. The
    data stays. `enable` lifts it."""
    tenant.lookup(user)  # an existing account: a typo must not disable nobody in silence
    disabled.disable(user, why)
    steps = [f"{user} disabled ({paths.disabled_path(user)}): logins do not provision it, "
             "its daemon does not start, docker commands say why"]  # fmt: skip
    stamp.forget(user)
    with Registry() as registry:
        allocation = registry.get(user)
    if allocation is not None:
        stop_daemon(allocation, config, with_containers=True)
        steps.append(f"stopped {allocation.tenant.service_unit} and its containers; data kept")
    return steps


def enable(user: str, config: Config) -> list[str]:
    from dtenant_session import provision  # it imports this module

    if not disabled.enable(user):
        raise DtenantError(f"{user!r} is not disabled")
    steps = [f"{user} enabled again"]
    with Registry() as registry:
        registered = registry.get(user) is not None
    if registered:
        outcome = provision.ensure(user, config, force=True)
        steps.append(f"provisioned: {outcome.allocation.tenant.socket}")
    return steps


def restart(user: str, config: Config) -> list[str]:
    """Stop the tenant's daemon as a shutdown would (restart policies apply) and start it."""
    with Registry() as registry:
        allocation = registry.get(user)
    if allocation is None:
        raise DtenantError(f"{user!r} is not a registered tenant (see `dtenant status`)")
    t = allocation.tenant
    stop_daemon(allocation, config, with_containers=True)

    async def start(bus: systemd.Bus) -> None:
        await bus.stop(f"dtenant-daemon-failed@{t.instance}.service")
        await bus.reset_failed(t.service_unit)
        await bus.start(t.socket_unit)
        await bus.start(t.service_unit)

    systemd.run(start, timeout=120)
    return [f"stopped {t.service_unit} and its containers", f"started {t.service_unit}"]


def boot(config: Config) -> list[str]:
    """At boot (dtenant-boot.service, after the firewall): what the reboot took of every
    tenant (provision.make_runtime), and its bridge where networkd did not make it; then
    provision, as a login would, every tenant whose daemon has containers it restarts
    (bootstart.py), and start those daemons, without waiting for them. The start counts
    as activity: the reaper's stop_running_after counts from it."""
    from dtenant_session import provision  # it imports this module

    with Registry() as registry:
        everyone = registry.all()
    known = {a.user for a in everyone}
    steps, units = [], []
    for allocation in everyone:
        try:
            provision.make_runtime(desired.layout(allocation))
        except OSError as exc:
            log.log(f"its directories below /run not made: {exc}", priority=log.WARNING,
                    user=allocation.user, step="boot")  # fmt: skip
    for user, done in network.ensure_bridges(everyone):
        log.log(done, priority=log.WARNING, user=user, step="boot")
        steps.append(f"{user}: {done}")
    for user in bootstart.marked():
        if user not in known:
            bootstart.forget(user)
            continue
        try:
            allocation = provision.ensure(user, config).allocation
        except Exception as exc:  # noqa: BLE001 - one tenant must not keep the others down
            log.log(f"not started at boot: {exc}", priority=log.WARNING, user=user, step="boot")
            steps.append(f"{user}: not started: {exc}")
            continue
        activity.touch(user)
        units.append(allocation.tenant.service_unit)
        steps.append(f"{user}: starting {allocation.tenant.service_unit} for its containers")
    if units:
        command.run([command.which("systemctl"), "start", "--no-block", *units], timeout=60)
    return steps or ["no tenant has containers that restart"]


class NotMoved(DtenantError):
    """A move that could not be made safely: the daemon was left running as it was."""


def move_daemon(allocation: Allocation) -> str:
    """Move a running daemon to the dockerd now installed without stopping its containers
    (move.py): its shims held in a scope of the tenant's slice, dockerd stopped with
    live-restore on, the new one started in the same mount namespace, where it restores
    them. NotMoved, before anything was stopped, when that cannot be done safely."""
    t = allocation.tenant
    if not json.loads(t.daemon_json.read_text()).get("live-restore"):
        raise NotMoved(f"live-restore is off in {t.daemon_json}")

    async def go(bus: systemd.Bus) -> str:
        group = (await bus.control_groups([t.service_unit])).get(t.service_unit)
        invocation = await bus.invocation_id(t.service_unit)
        if not group or not invocation:
            raise NotMoved(f"{t.service_unit} is not running")
        shims = [p.pid for p in move.shims_in(group)]
        if not shims:
            raise NotMoved(f"no container shim runs in {group}")
        main_pid = await bus.main_pid(t.service_unit)
        if not keeps_its_tmp(mountinfo.read(main_pid)):
            raise NotMoved("it started before its namespace had a /tmp of its own (its "
                           "unit's PrivateTmp= directory goes at the stop, under the "
                           "shims)")  # fmt: skip
        scope = move.scope_name(t.instance, time.time())
        scope_group = f"{group.rsplit('/', 1)[0]}/{scope}"
        move.write_mark(t.user, move.Mark(invocation, scope))
        try:
            await bus.start_scope(scope, t.slice, shims, before=t.service_unit)
            left = [pid for pid in shims if _group_of(pid) not in (scope_group, None)]
            if left:
                raise NotMoved(f"shims {left} are not in {scope} after the move")
            await bus.stop(t.service_unit)
        finally:
            move.clear_mark(t.user)
        await _deliberate(bus, t)
        try:
            await bus.start(t.service_unit)
        except systemd.BusError as exc:
            return f"moved, but the new daemon did not start: {exc}"
        return _moved_into(t.user, await bus.main_pid(t.service_unit), shims, scope)

    result = systemd.run(go, timeout=300)
    log.log(result, priority=log.NOTICE, user=t.user, step="outdated")
    return result


OWN_TMP = ("/tmp", "/var/tmp")  # noqa: S108 - mount points in the daemon's namespace


def keeps_its_tmp(mounts: list[mountinfo.MountEntry]) -> bool:
    """The daemon's /tmp and /var/tmp are tmpfs of its namespace's own, which outlive its
    unit's stop (pure); a daemon started under an older docker@.service has PrivateTmp=
    binds there."""
    found = {m.mount_point: m for m in mounts}
    return all(
        (entry := found.get(path)) is not None and entry.fstype == "tmpfs" and entry.root == "/"
        for path in OWN_TMP
    )


def _group_of(pid: int) -> str | None:
    process = move.read_process(pid)
    return None if process is None else process.group


def _moved_into(user: str, main_pid: int, shims: list[int], scope: str) -> str:
    """Whether the new daemon runs where its containers' shims are (one line)."""
    daemon = move.read_process(main_pid) if main_pid else None
    held = [p for p in map(move.read_process, shims) if p is not None]
    if daemon is None:
        return f"moved: the new daemon is not running; {len(held)} shim(s) held in {scope}"
    if not held:
        return (f"restarted on the new dockerd (pid {main_pid}), but no held shim is left: its "
                f"containers stopped (see `dtenant logs {user}`)")  # fmt: skip
    if held and all(p.mount_ns == daemon.mount_ns for p in held):
        return (f"moved to the new dockerd (pid {main_pid}) in its containers' mount "
                f"namespace; {len(held)} container shim(s) kept running")  # fmt: skip
    return (f"moved, but the new dockerd (pid {main_pid}) is not in the namespace of the "
            f"{len(held)} shim(s) held in {scope}")  # fmt: skip


def restart_outdated() -> list[str]:
    """Move daemons that run an outdated binary (binaries.py) to the new one. One with no
    running container stops, and its socket starts the new dockerd at the next command;
    one with running containers moves without stopping them (move_daemon); one that
    cannot move safely is kept and named (`dtenant restart USER` stops its containers,
    restart policies bring them back). A daemon with a client connected (a build, an
    attached terminal) is left for the next pass."""
    from dtenant_session import reaper, status  # they import this module

    rows = [r for r in status.collect() if r.outdated]
    with Registry() as registry:
        allocations = {a.user: a for a in registry.all()}
    connections = reaper.connections()
    steps = []
    for row in rows:
        stale = ", ".join(row.outdated)
        allocation = allocations.get(row.user)
        if allocation is None:
            continue
        connected = f"{row.user}: kept for now: runs an outdated {stale}, and a client is connected"
        if connections.get(row.socket):
            steps.append(connected)
            continue
        if row.running_containers != 0:
            steps.append(f"{row.user}: {_move_busy(allocation, stale)}")
            continue
        # Its last look frozen, as the reaper's: a command arriving now waits for the new one.
        if not stop_idle_daemon(allocation, functools.partial(reaper.unconnected, row.socket)):
            steps.append(connected)
            continue
        log.log(f"stopped the daemon running an outdated {stale}; its socket starts the new "
                f"one", priority=log.NOTICE, user=row.user, step="outdated")  # fmt: skip
        steps.append(f"{row.user}: stopped (it ran an outdated {stale} and no container); "
                     f"the next docker command starts the new one")  # fmt: skip
    return steps or ["no daemon runs an outdated binary"]


def _move_busy(allocation: Allocation, stale: str) -> str:
    user = allocation.user
    try:
        return move_daemon(allocation)
    except (NotMoved, systemd.BusError, OSError, ValueError) as exc:
        log.log(f"not moved from the outdated {stale}: {exc}", priority=log.WARNING,
                user=user, step="outdated")  # fmt: skip
        return (f"kept: runs an outdated {stale} and could not move without stopping its "
                f"containers ({exc}); `dtenant restart {user}` when convenient")  # fmt: skip
