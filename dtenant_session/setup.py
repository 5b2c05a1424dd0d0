"""`dtenant setup`: host-wide settings that follow the configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dtenant_session import (
    command,
    dockerhost,
    files,
    log,
    network,
    ownerstamp,
    paths,
    render,
    stamp,
    systemd,
    tenant,
)
from dtenant_session.config import Config
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation, Registry


def apply(config: Config) -> list[str]:
    steps = []
    with Registry() as registry:
        allocations = registry.all()
    # Before the stamps go: every next login re-decides its own user anyway.
    listed = dockerhost.rewrite([a.user for a in allocations], eligible(config))
    steps.append(f"{len(listed)} users get DOCKER_HOST at login ({paths.DOCKER_HOST_USERS})")
    # --package: keeps the administrator's other choices, enables new Default: yes profiles.
    command.run([command.which("pam-auth-update"), "--package"], timeout=60)
    steps.append("PAM session stack updated (pam-auth-update)")
    network.sync_firewall(allocations, config)
    steps.append(f"firewall synced for {len(allocations)} tenants")
    # Written world-readable by earlier versions; provisioning writes them 0600.
    tenants = [a.tenant for a in allocations]
    private = [files.make_private(f) for t in tenants
               for f in (t.daemon_json, t.data_root / ownerstamp.NAME)]  # fmt: skip
    if any(private):
        steps.append(f"{sum(private)} tenant files made readable by root only")
    reload = False
    if files.write_if_changed(Path(REAP_INTERVAL_DROPIN), reap_interval_dropin(config)):
        reload = True
        steps.append(f"reaper runs every {config.reap.interval} s ({REAP_INTERVAL_DROPIN})")
    if files.write_if_changed(Path(SLICE_LIMITS_DROPIN), render.slice_limits(config)):
        reload = True
        steps.append(f"tenant slice limits written ({SLICE_LIMITS_DROPIN})")
    if reload:
        systemd.run(lambda bus: bus.reload_daemon())
    steps += _upgrade_tenants(config, allocations)
    forgotten = stamp.clear_all()
    steps.append(f"{forgotten} tenants will converge to this configuration at their next login")
    return steps


def eligible(config: Config) -> Callable[[str], bool]:
    def check(user: str) -> bool:
        try:
            tenant.check_eligible(tenant.lookup(user), config.eligibility)
        except tenant.NotEligible:
            return False
        return True

    return check


def _upgrade_tenants(config: Config, allocations: list[Allocation]) -> list[str]:
    """Tenants of version 0.1 get their own container ids now (a package upgrade runs
    this), not at their users' next login; one that cannot is named and skipped."""
    from dtenant_session import provision

    steps = []
    for allocation in allocations:
        if allocation.id_base:
            continue
        try:
            provision.ensure(allocation.user, config, force=True)
            steps.append(f"{allocation.user}: moved to container ids of its own")
        except (DtenantError, OSError) as exc:
            steps.append(f"{allocation.user}: not moved yet ({exc}); its next login tries again")
            log.log(f"not moved to container ids of its own yet: {exc}", priority=log.ERR,
                    user=allocation.user, step="upgrade")  # fmt: skip
    return steps


SLICE_LIMITS_DROPIN = "/etc/systemd/system/dtenant-.slice.d/50-limits.conf"
REAP_INTERVAL_DROPIN = "/etc/systemd/system/dtenant-reap.timer.d/interval.conf"


def reap_interval_dropin(config: Config) -> str:
    return render.reap_timer_dropin(config)
