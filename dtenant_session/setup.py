"""`dtenant setup`: host-wide settings that follow the configuration."""

from __future__ import annotations

from pathlib import Path

from dtenant_session import command, files, network, paths, render
from dtenant_session.config import Config
from dtenant_session.registry import Registry


def apply(config: Config) -> list[str]:
    steps = []
    if files.write_if_changed(Path(paths.PAM_PROFILE), render.pam_profile(config)):
        steps.append(f"wrote {paths.PAM_PROFILE} for the eligibility rules")
    # --package: keeps the administrator's other choices, enables new Default: yes profiles.
    command.run([command.which("pam-auth-update"), "--package"], timeout=60)
    steps.append("PAM session stack updated (pam-auth-update)")
    with Registry() as registry:
        allocations = registry.all()
    network.sync_firewall(allocations, config)
    steps.append(f"firewall synced for {len(allocations)} tenants")
    return steps
