"""Find idle tenant daemons and stop them (`dtenant reap`, run by dtenant-reap.timer).

A daemon is idle when all of these hold: its user has no logind session, nothing is
connected to its socket, it runs no container, and for reap.idle_timeout seconds it has
served no API request and no pass has seen its user logged in (activity.py: the
authorization plugin and each pass that finds a logind session touch one file; logouts
are not hooked, since root would run with the user's PAM environment). Idle daemons are stopped; the
socket keeps listening, so the next docker command starts the daemon again with
everything intact. Only running daemons are looked at closely: a stopped daemon is
never contacted, so a pass never socket-activates one. Nothing on disk is removed.
"""

from __future__ import annotations

import functools
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dtenant_session import (
    activity,
    bootstart,
    command,
    config,
    disabled,
    egress,
    files,
    freezer,
    lifecycle,
    log,
    metrics,
    paths,
    standing,
    status,
    systemd,
    treewalk,
)
from dtenant_session.config import Config, Reap
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry

STOP = "stop"
STOP_WITH_CONTAINERS = "stop-containers"
KEEP = "keep"
SKIP = "skip"
# An orphaned tenant (standing.py): put out of reach of the account now holding its name or uid.
ISOLATE = "isolate"


@dataclass(frozen=True)
class Observation:
    """What a pass can see of one tenant, gathered without waking its daemon."""

    user: str
    uid: int
    daemon: str  # ActiveState of docker@USER.service
    sessions: int | None  # None: unknown (logind not answering)
    connections: int
    running_containers: int | None  # None: not asked (daemon not running) or unknown
    last_activity: float | None


@dataclass
class Decision:
    user: str
    action: str
    reasons: list[str] = field(default_factory=list)
    idle_for: float | None = None
    done: bool = False


def decide(seen: Observation, rules: Reap, now: float) -> Decision:
    """The reaper's judgement for one tenant (pure)."""
    if seen.daemon != "active":
        return Decision(seen.user, SKIP, [f"daemon {seen.daemon}"])
    idle_for = None if seen.last_activity is None else max(0.0, now - seen.last_activity)
    busy = []
    if seen.sessions is None:
        busy.append("login sessions unknown (is systemd-logind running?)")
    elif seen.sessions:
        busy.append(f"{seen.sessions} login session(s)")
    if seen.connections:
        busy.append(f"{seen.connections} open API connection(s)")
    if idle_for is not None and idle_for < rules.idle_timeout:
        busy.append(f"last activity {idle_for:.0f} s ago (idle_timeout {rules.idle_timeout} s)")
    if busy:
        return Decision(seen.user, KEEP, busy, idle_for)
    if seen.running_containers is None:
        return Decision(seen.user, KEEP, ["running containers unknown"], idle_for)
    if seen.running_containers:
        running = f"{seen.running_containers} running container(s)"
        limit = rules.stop_running_after
        if limit and (idle_for is None or idle_for >= limit):
            return Decision(seen.user, STOP_WITH_CONTAINERS,
                            [running, f"no activity for {limit} s (stop_running_after)"],
                            idle_for)  # fmt: skip
        return Decision(seen.user, KEEP, [running], idle_for)
    quiet = "no activity recorded" if idle_for is None else f"no activity for {idle_for:.0f} s"
    return Decision(seen.user, STOP, ["no session, no connection, no container", quiet], idle_for)


def mark_sessions_active(seen: list[Observation], now: float) -> list[Observation]:
    """A login session is activity: idle time counts from the last pass that saw one (pure)."""
    return [replace(s, last_activity=now) if s.sessions else s for s in seen]


def socket_connections(ss_output: str) -> dict[str, int]:
    """Connections per listening path, from `ss -xanH` (pure): those accepted, and those
    waiting in the listening socket's queue (its LISTEN line's Recv-Q), which a daemon
    frozen for its last look (freezer.py) has not accepted. An accepted connection whose
    peer is gone (peer inode 0) is not use: dockerd may not have closed its end yet."""
    counts: dict[str, int] = {}
    for line in ss_output.splitlines():
        fields = line.split()
        # Netid State Recv-Q Send-Q Local Port Peer PeerPort
        if len(fields) < 8 or not fields[4].startswith("/"):
            continue
        if fields[1] == "LISTEN" and fields[2].isdigit():
            use = int(fields[2])
        else:
            use = 1 if fields[1] == "ESTAB" and fields[7] != "0" else 0
        if use:
            counts[fields[4]] = counts.get(fields[4], 0) + use
    return counts


def listed_sockets(ss_output: str) -> set[int]:
    """The inodes of the unix sockets `ss -xanH` lists (pure): those of its network
    namespace only."""
    fields = (line.split() for line in ss_output.splitlines())
    return {int(f[5]) for f in fields if len(f) >= 8 and f[5].isdigit()}


def _ss() -> str:
    return command.run([command.which("ss"), "-xanH"], timeout=30).stdout


def connections() -> dict[str, int]:
    return socket_connections(_ss())


def unconnected(socket: str, daemon: freezer.Frozen) -> bool:
    """Nothing connected to the frozen daemon's socket or waiting in its queue. A
    connection's server end is in its client's network namespace: one from a client in a
    namespace of its own (`unshare -rn`, a rootless container) is not listed here, but is
    a unix socket the daemon holds that the host's namespace does not have."""
    listed = _ss()
    if socket_connections(listed).get(socket, 0):
        return False
    return not daemon.unix_sockets() - listed_sockets(listed)


def untouched(allocation: Allocation, idle_timeout: float, daemon: freezer.Frozen) -> bool:
    """The last look before an idle daemon's stop, taken with the daemon frozen
    (lifecycle.stop_idle_daemon): unconnected, and no request came within idle_timeout
    (the plugin stamps every request to within authz.ACTIVITY_EVERY, well below the 1 s
    idle_timeout can be at least)."""
    if not unconnected(str(allocation.tenant.socket), daemon):
        return False
    last = activity.last(allocation.user)
    return last is None or time.time() - last >= idle_timeout


def observe(allocations: list[Allocation]) -> list[Observation]:
    async def gather(
        bus: systemd.Bus,
    ) -> tuple[dict[str, systemd.UnitState], dict[int, int] | None]:
        units = await bus.units(["docker@*.service"])
        try:
            return units, await bus.user_sessions()
        except systemd.BusError as exc:  # logind down: nobody's sessions are known
            log.log(f"reaper: login sessions unknown, every daemon is kept: {exc}",
                    priority=log.WARNING, step="reap")  # fmt: skip
            return units, None

    units, sessions = systemd.run(gather)
    in_use = connections()
    seen = []
    for a in allocations:
        unit = units.get(a.tenant.service_unit)
        state = unit.active if unit else "inactive"
        seen.append(Observation(
            user=a.user, uid=a.uid, daemon=state,
            sessions=None if sessions is None else sessions.get(a.uid, 0),
            connections=in_use.get(str(a.tenant.socket), 0),
            running_containers=status.containers_in_use(a) if state == "active" else None,
            last_activity=activity.last(a.user),
        ))  # fmt: skip
    return seen


def sweep_orphans(
    allocations: list[Allocation], registered: set[str], dry_run: bool
) -> list[Decision]:
    """Orphaned tenants still within reach (a login may not have found them yet: the uid
    or name was given to an account that has not logged in) are isolated."""
    decisions = []
    for allocation in allocations:
        if not lifecycle.reachable(allocation.tenant):
            continue  # cheap first: at most a few tenants ask NSS
        seen = lifecycle.standing_now(allocation, registered)
        if seen.kind != standing.ORPHANED:
            continue
        decision = Decision(allocation.user, ISOLATE, [seen.problem])
        if not dry_run:
            try:
                lifecycle.isolate(allocation, seen.problem)
                decision.done = True
            except Exception as exc:  # noqa: BLE001 - one tenant's failure must not stop the pass
                log.log(f"reaper: could not isolate the orphaned tenant: {exc}", priority=log.ERR,
                        user=allocation.user, step="reap")  # fmt: skip
        decisions.append(decision)
    return decisions


def settings() -> tuple[Config, str | None]:
    """The configuration, remembered as the last good one for the reaper; when it cannot
    be read, the last good reaper settings and why (the file and key), loudly: a broken
    drop-in must not leave idle daemons running for good."""
    try:
        loaded = config.load()
    except DtenantError as exc:
        kept, since = _last_good()
        log.log(f"reaper: the configuration is broken: {exc}; this pass keeps the last good "
                f"reaper settings ({since})", priority=log.ERR, step="reap")  # fmt: skip
        return Config(reap=kept), str(exc)
    remember(loaded.reap)
    return loaded, None


def remember(rules: Reap) -> None:
    files.write_if_changed(Path(paths.REAP_SETTINGS), json.dumps(asdict(rules), sort_keys=True),
                           files.PRIVATE)  # fmt: skip


def _last_good() -> tuple[Reap, str]:
    try:
        with open(paths.REAP_SETTINGS) as stream:
            return Reap(**json.load(stream)), f"remembered in {paths.REAP_SETTINGS}"
    except (OSError, ValueError, TypeError) as exc:
        return Reap(), f"none remembered ({paths.REAP_SETTINGS}: {exc}), the defaults"


def reap(config: Config, *, dry_run: bool = False, user: str | None = None) -> list[Decision]:
    if not dry_run:
        _thaw_left()
    with Registry(read_only=True) as registry:
        everyone = registry.all()
    allocations = [a for a in everyone if user is None or a.user == user]
    isolated = sweep_orphans(allocations, {a.user for a in everyone}, dry_run)
    orphans = {d.user for d in isolated}
    allocations = [a for a in allocations if a.user not in orphans]
    now = time.time()
    by_user = {a.user: a for a in allocations}
    started = time.monotonic()
    seen = mark_sessions_active(observe(allocations), now)
    decisions = [decide(one, config.reap, now) for one in seen]
    for decision in decisions:
        log.trace("decision", f"reap {decision.user}",
                  f"{decision.action} ({'; '.join(decision.reasons)})", started)  # fmt: skip
    if dry_run:
        return isolated + decisions
    _record_sessions([one.user for one in seen if one.sessions])
    _record_boot_starts([one.user for one in seen if one.daemon == "active"])
    for decision in decisions:
        if decision.action not in (STOP, STOP_WITH_CONTAINERS):
            continue
        allocation = by_user[decision.user]
        # Stops take seconds each: what was idle at the start of the pass is looked at
        # again just before its own stop, and kept if it is in use now.
        again = decide(mark_sessions_active(observe([allocation]), time.time())[0], config.reap,
                       time.time())  # fmt: skip
        if again.action != decision.action:
            decision.action, decision.reasons = again.action, again.reasons
            continue
        reason = "; ".join(decision.reasons)
        try:
            if decision.action == STOP_WITH_CONTAINERS:
                lifecycle.stop_daemon(allocation, config, with_containers=True)
            elif not lifecycle.stop_idle_daemon(
                allocation, functools.partial(untouched, allocation, config.reap.idle_timeout)
            ):
                decision.action, decision.reasons = KEEP, ["used again just before the stop"]
                continue
        except Exception as exc:  # noqa: BLE001 - one tenant's failure must not stop the pass
            log.log(f"reaper: could not stop the daemon: {exc}", priority=log.ERR,
                    user=decision.user, step="reap")  # fmt: skip
            continue
        decision.done = True
        what = "daemon and its containers" if decision.action == STOP_WITH_CONTAINERS else "daemon"
        log.log(f"reaper stopped the idle {what} ({reason}); its socket still listens",
                priority=log.NOTICE, user=decision.user, step="reap")  # fmt: skip
        if decision.action == STOP_WITH_CONTAINERS:
            _tell(allocation, notice(decision, time.time()))
    if user is None:
        _move_outdated()
    _refresh_sizes(allocations)
    return isolated + decisions


def _thaw_left() -> None:
    """A daemon frozen for its last look by a stop that was itself killed midway (the
    pass's timeout, a crash) would hang its user's commands for good: thawed first."""
    try:
        thawed = freezer.thaw_left(f"{egress.TOP_SLICE}/dtenant-*.slice/docker@*.service")
    except (OSError, freezer.FreezeError, files.LockBusy) as exc:
        log.log(f"reaper: daemons left frozen unknown: {exc}", priority=log.WARNING, step="reap")
        return
    for directory in thawed:
        log.log(f"reaper: thawed {directory}, left frozen by an interrupted stop",
                priority=log.WARNING, step="reap")  # fmt: skip


def _move_outdated() -> None:
    """Daemons left on an old dockerd or containerd by an update move to the new one when
    that stops nothing of theirs (lifecycle.restart_outdated); the rest are logged."""
    try:
        for step in lifecycle.restart_outdated():
            if "kept" in step:
                log.log(f"reaper: {step}", priority=log.NOTICE, step="reap")
    except Exception as exc:  # noqa: BLE001 - the pass goes on
        log.log(f"reaper: cannot look for outdated daemons: {exc}", priority=log.WARNING,
                step="reap")  # fmt: skip


def notice(decision: Decision, now: float) -> str:
    """What the user reads at their next login shell (pure)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(now))
    return (f"dtenant: your Docker daemon was stopped at {when} with its containers "
            f"({'; '.join(decision.reasons)}); restart policies bring them back at your next "
            f"docker command\n")  # fmt: skip


def _tell(allocation: Allocation, text: str) -> None:
    """The user's own read-only file in root's directory (profile.d shows it once)."""
    try:
        os.makedirs(paths.NOTICES_DIR, mode=0o755, exist_ok=True)
        files.replace(paths.notice_path(allocation.user), text, 0o400,
                      owner=(allocation.uid, 0))  # fmt: skip
    except OSError as exc:
        log.log(f"reaper: cannot leave the user a notice: {exc}", priority=log.WARNING,
                user=allocation.user, step="reap")  # fmt: skip


def refresh_metrics(rules: Reap, *, config_broken: bool) -> None:
    """node-exporter's file, after a pass; a failure here is a warning, not a failed pass."""
    if not rules.metrics_file or not os.path.isdir(os.path.dirname(rules.metrics_file)):
        return
    try:
        rows = status.collect()
        off = {row.user for row in rows if disabled.reason(row.user) is not None}
        text = metrics.render(rows, off, config_broken=config_broken, now=time.time())
        metrics.write(rules.metrics_file, text)
    except (OSError, DtenantError) as exc:
        log.log(f"reaper: cannot write the metrics to {rules.metrics_file}: {exc}",
                priority=log.WARNING, step="reap")  # fmt: skip


def _record_sessions(users: list[str]) -> None:
    for user in users:
        try:
            activity.touch(user)
        except OSError as exc:
            log.log(f"reaper: cannot record the session as activity: {exc}",
                    priority=log.WARNING, user=user, step="reap")  # fmt: skip


def _record_boot_starts(users: list[str]) -> None:
    """Whether each running daemon starts at boot (bootstart.py): a host that loses its
    power keeps what the last pass saw."""
    for user in users:
        started = time.monotonic()
        log.trace("boot start", f"reap {user}", bootstart.record(user), started)


SIZES_PER_PASS = 20
SIZES_SECONDS = 60.0  # a pass's time for measuring, shared by its tenants
SIZE_LIMITS = treewalk.Limits(seconds=20.0, entries=5_000_000)


def _refresh_sizes(allocations: list[Allocation]) -> None:
    """Data-root sizes for `dtenant status`: those used since last measured, a few a pass,
    each within its budget. Whatever one tenant stored, the others are measured and its
    own size is shown as a lower bound or as unknown, with the reason."""
    deadline = time.monotonic() + SIZES_SECONDS

    def urgency(allocation: Allocation) -> tuple[float, float]:
        # The longest unmeasured first, among those the most recently used: none starves.
        return status.measured_at(allocation), -(activity.last(allocation.user) or 0.0)

    stale = sorted((a for a in allocations if status.size_is_stale(a)), key=urgency)
    for allocation in stale[:SIZES_PER_PASS]:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        limits = SIZE_LIMITS._replace(seconds=min(left, SIZE_LIMITS.seconds or left))
        try:
            size = status.measure_size(allocation, limits)
        except Exception as exc:  # noqa: BLE001 - one tenant's data must not end the pass
            log.log(f"reaper: cannot measure the data-root: {exc}", priority=log.WARNING,
                    user=allocation.user, step="reap")  # fmt: skip
            continue
        if size.note:
            log.log(f"reaper: data-root size of {allocation.tenant.data_root}: {size.note}",
                    priority=log.WARNING, user=allocation.user, step="reap")  # fmt: skip


def as_dicts(decisions: list[Decision]) -> list[dict[str, Any]]:
    return [asdict(d) for d in decisions]


def table(decisions: list[Decision], dry_run: bool) -> str:
    lines = []
    for d in decisions:
        verb = d.action if not dry_run or d.action in (KEEP, SKIP) else f"would {d.action}"
        lines.append(f"{d.user:<20} {verb:<22} {'; '.join(d.reasons)}")
    return "\n".join(lines) if lines else "no tenants"
