"""ensure(user): converge one tenant to its provisioned state; idempotent and crash-safe.

Order matters: registry allocation, files, the firewall (isolation exists before any
container of the tenant can run), networkd, then the socket. The daemon itself is not
started: the first docker command starts it through the socket.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dtenant_session import (
    files,
    lifecycle,
    network,
    paths,
    render,
    stamp,
    subid,
    systemd,
    tenant,
    verify,
)
from dtenant_session.config import Config
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry


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
    os.makedirs(paths.LOCKS_DIR, exist_ok=True)
    fd = os.open(f"{paths.LOCKS_DIR}/{user}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"user {user!r}: another provisioning holds "
                        f"{paths.LOCKS_DIR}/{user}.lock for more than {timeout:g} s"
                    ) from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)


def _directories(allocation: Allocation) -> None:
    t = allocation.tenant
    (t.state_dir / "REMOVED").unlink(missing_ok=True)  # provisioned again after a removal
    # o+x on every parent: userns-remapped daemons must traverse to their data-root.
    for directory in (paths.STATE_DIR, paths.TENANTS_DIR, t.state_dir, t.data_root,
                      paths.RUN_TENANTS_DIR, t.run_dir):  # fmt: skip
        os.makedirs(directory, mode=0o711, exist_ok=True)
        os.chmod(directory, 0o711)  # noqa: S103 - traversal only, no listing
    verify.write_owner_stamp(t.user, t.uid)
    # Root's alone from the start: the hook's `touch` at logout then only sets its mtime.
    files.make_private(Path(paths.activity_path(t.user)), create=True)


def ensure(user: str, config: Config, *, timeout: float = 30.0, force: bool = False) -> Outcome:
    started = time.monotonic()
    account = tenant.lookup(user)
    tenant.check_eligible(account, config.eligibility)
    with tenant_lock(user, timeout):
        with Registry() as registry:
            allocation = registry.get(user)
            if allocation is not None and not force and stamp.is_current(user):
                return Outcome(allocation, already=True)
            renamed = None if allocation else lifecycle.renamed_from(registry, user, account.uid)
            if renamed is not None:
                lifecycle.rename(renamed, user, config, registry)
                allocation = registry.get(user)
            if allocation is None or allocation.uid != account.uid:
                allocation = registry.allocate(
                    user, account.uid, config.network, network.routed_subnets(),
                    network.bridge_slots_in_use(),
                )  # fmt: skip
            everyone = registry.all()
        outcome = Outcome(allocation)
        if renamed is not None:
            outcome.steps.append(f"renamed from {renamed.user}: data moved, same uid")
        _converge(allocation, account.gid, everyone, config, outcome)
        stamp.write(user)
    outcome.seconds = time.monotonic() - started
    return outcome


def _converge(
    allocation: Allocation, gid: int, everyone: list[Allocation], config: Config, outcome: Outcome
) -> None:
    t = allocation.tenant
    _directories(allocation)
    for file in subid.ensure(t.user, t.uid, gid, t.slot, config.userns.subid_base):
        outcome.steps.append(f"mapped {t.user} in {file}")
    daemon_json = render.daemon_json(allocation, config, gid)
    if files.write_if_changed(t.daemon_json, daemon_json, mode=files.PRIVATE):
        outcome.steps.append(f"wrote {t.daemon_json}")
    outcome.steps.append(f"firewall: {network.add_to_firewall(allocation, everyone, config)}")
    if network.write_bridge_files(allocation):
        outcome.steps.append(f"wrote networkd files for {t.bridge}")

    async def units(bus: systemd.Bus) -> None:
        # A daemon that failed before: the explanation gives the socket back, and the
        # next start is not held back by the failures that came before.
        await bus.stop(f"dtenant-daemon-failed@{t.instance}.service")
        await bus.reset_failed(t.service_unit)
        await bus.enable([t.socket_unit])
        await bus.start(t.socket_unit)

    outcome.steps.append(f"bridge {t.bridge}: {network.ensure_bridge(allocation)}")
    systemd.run(units, timeout=config.hook.time_limit)
    outcome.steps.append(f"{t.socket_unit} enabled and listening")
