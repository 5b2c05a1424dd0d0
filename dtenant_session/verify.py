"""`dtenant verify`: every tenant checked against what it should be, and the host as a
whole (orphaned files, other tenants' data-roots, the id files).

Per tenant, the pre-start checks (prestart.py: data-root owner, locks, file system, id
map) and the comparison of the host with the tenant's desired state (desired.py: files,
directories, units, bridge).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtenant_session import desired, mountinfo, paths
from dtenant_session.prestart import (
    CannotCheck,
    Finding,
    check_disk,
    check_distinct,
    check_filesystem,
    check_locks,
    check_mapping,
    check_owner,
    orphan_advice,
)


class Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.checked: list[str] = []

    def to_json(self) -> str:
        findings = [f.as_dict() for f in self.findings]
        return json.dumps({"checked": self.checked, "findings": findings}, indent=2)


def check_account(allocation: Any, registered: set[str]) -> list[Finding]:
    """The tenant's user still exists with the uid the registry holds; else whether it was
    certainly renamed or is orphaned (standing.py)."""
    from dtenant_session import lifecycle, standing

    user = allocation.user
    seen = lifecycle.standing_now(allocation, registered)
    if seen.kind == standing.CURRENT:
        return []
    advice = orphan_advice(user)
    if seen.kind == standing.RENAMED:
        advice = (f"it moves at {seen.new_name}'s next login, or now with "
                  f"`dtenant rename {user} {seen.new_name}`")  # fmt: skip
    return [Finding(user, "account", seen.problem, advice=advice)]


def check_consistency(allocation: Any, config: Any, links: dict[str, set[str]],
                      firewall: str | None) -> list[Finding]:  # fmt: skip
    """The host holds the tenant's desired state (desired.py): files and their modes,
    directories and their owners, units, bridge, firewall elements."""
    from dtenant_session import provision, tenant

    account = tenant.by_name(allocation.user)
    if account is None:
        return []  # check_account said why
    wanted = provision.desired_state(allocation, config, account)
    advice = f"run `dtenant provision {allocation.user}`"
    found = desired.differences(wanted, observe(wanted, links, firewall))
    return [Finding(allocation.user, check, problem, path, advice=advice)
            for check, problem, path in found]  # fmt: skip


def observe(wanted: desired.TenantState, links: dict[str, set[str]],
            firewall: str | None) -> desired.Observed:  # fmt: skip
    """What the host has of a tenant's desired state."""
    files: dict[Path, tuple[str, int] | None] = {}
    for file in wanted.files:
        try:
            files[file.path] = (file.path.read_text(), stat.S_IMODE(file.path.stat().st_mode))
        except (OSError, UnicodeDecodeError):
            files[file.path] = None
    directories: dict[Path, tuple[int, int, int] | None] = {}
    for directory in wanted.directories:
        try:
            seen = directory.path.lstat()
            directories[directory.path] = (seen.st_uid, seen.st_gid, stat.S_IMODE(seen.st_mode))
        except OSError:
            directories[directory.path] = None
    wants = f"{paths.SYSTEMD_DIR}/sockets.target.wants"
    enabled = frozenset(u for u in wanted.enabled if os.path.lexists(f"{wants}/{u}"))
    addresses = links.get(wanted.bridge)
    elements = None if firewall is None else {
        name: frozenset(e for e in wanted_elements if e in firewall)
        for name, wanted_elements in wanted.firewall.items()
    }  # fmt: skip
    bridge = None if addresses is None else frozenset(addresses)
    return desired.Observed(files, directories, enabled, bridge, elements)


def firewall_listing() -> str | None:
    """dtenant's nftables table as nft lists it; None when it cannot be listed."""
    from dtenant_session import command

    try:
        listed = command.run([command.which("nft"), "list", "table", "inet", "dtenant"],
                             check=False, timeout=30)  # fmt: skip
    except command.CommandError:
        return None
    return listed.stdout if listed.returncode == 0 else ""


def check_orphans(users: set[str], bridges: set[str]) -> list[Finding]:
    findings = []
    try:
        directories = set(os.listdir(paths.TENANTS_DIR))
    except FileNotFoundError:
        directories = set()
    for user in sorted(directories - users):
        where = f"{paths.TENANTS_DIR}/{user}"
        if desired.removed_mark(Path(where)).exists():  # kept by `dtenant remove` on purpose
            continue
        findings.append(
            Finding(
                user,
                "registry",
                f"{where} has no registry entry",
                where,
                advice="a removed tenant's data, or a registry that lost it",
            )
        )
    try:
        network_files = os.listdir(paths.NETWORKD_DIR)
    except FileNotFoundError:
        network_files = []
    for name in sorted(network_files):
        stem, _, suffix = name.partition(".")
        ours = stem.startswith("60-dtenant") and suffix in ("netdev", "network")
        if ours and stem.removeprefix("60-") not in bridges:
            where = f"{paths.NETWORKD_DIR}/{name}"
            findings.append(Finding("-", "registry", f"{where} belongs to no tenant", where))
    return findings


def _check_one(allocation: Any, config: Any, mounts: list[mountinfo.MountEntry],
               links: dict[str, set[str]], registered: set[str],
               firewall: str | None) -> list[Finding]:  # fmt: skip
    """Every check of one tenant; whatever its data does to them, a finding for it and
    the other tenants still checked."""
    user = allocation.user
    findings: list[Finding] = []
    try:
        findings += check_account(allocation, registered)
    except Exception as exc:  # noqa: BLE001 - one tenant's data must not end the pass
        findings.append(Finding(user, "error", f"could not check: {exc}"))
    orphan = bool(findings)  # an orphan's files and units are not to be put right
    checks: tuple[Callable[[], list[Finding]], ...] = (
        lambda: check_owner(user, allocation.uid),
        lambda: check_mapping(user, allocation.id_base),
        lambda: check_filesystem(user, mounts),
        lambda: check_disk(user, mounts),
        lambda: check_locks(user, allowed_unit=allocation.tenant.service_unit),
        lambda: [] if orphan else check_consistency(allocation, config, links, firewall),
    )
    for check in checks:
        try:
            findings += check()
        except CannotCheck:
            raise
        except Exception as exc:  # noqa: BLE001 - one tenant's data must not end the pass
            findings.append(Finding(user, "error", f"could not check: {exc}"))
    return findings


def verify_all(config: Any, only: str | None = None) -> Report:
    """Every check for every tenant (or one): `dtenant verify`."""
    from dtenant_session.registry import Registry, RegistryError

    try:
        with Registry(read_only=True) as registry:
            allocations = registry.all()
    except RegistryError as exc:
        raise CannotCheck(str(exc)) from None
    from dtenant_session import network

    report = Report()
    mounts = mountinfo.read()
    links = network.link_addresses()
    firewall = firewall_listing()
    chosen = [a for a in allocations if only is None or a.user == only]
    if only is not None and not chosen:
        raise CannotCheck(f"{only!r} is not a registered tenant")
    registered = {a.user for a in allocations}
    for allocation in chosen:
        report.checked.append(allocation.user)
        report.findings += _check_one(allocation, config, mounts, links, registered, firewall)
    report.findings += check_distinct([a.user for a in allocations], mounts, involving=only)
    report.findings += check_space(chosen)
    if only is None:
        report.findings += check_orphans(
            {a.user for a in allocations}, {a.tenant.bridge for a in allocations}
        )
        report.findings += check_subid_files()
        report.findings += check_docker_host_list()
    return report


def check_docker_host_list() -> list[Finding]:
    """The list pam_listfile reads is root's regular file, as `dtenant setup` writes it."""
    from dtenant_session import dockerhost

    try:
        seen: os.stat_result | None = os.stat(paths.DOCKER_HOST_USERS, follow_symlinks=False)
    except FileNotFoundError:
        seen = None
    problem = dockerhost.unsafe(seen)
    if problem is None:
        return []
    return [Finding("", "pam", f"{paths.DOCKER_HOST_USERS} {problem}", paths.DOCKER_HOST_USERS,
                    advice="run `dtenant setup`")]  # fmt: skip


def check_space(allocations: list[Any]) -> list[Finding]:
    """The disk holding the tenants is low: who holds the most, as the reaper measured."""
    from dtenant_session import status

    sizes = {a.user: status.data_root_size(a) for a in allocations}
    rows = [status.TenantStatus(
        user=a.user, uid=a.uid, slot=a.slot, bridge="", subnet="", networks="", socket="",
        socket_state="", daemon_state="", running_containers=None, idle_seconds=None,
        data_root_bytes=sizes[a.user].bytes, memory_bytes=None, cpu_seconds=None,
        data_root_note=sizes[a.user].note) for a in allocations]  # fmt: skip
    note = status.space_note(status.room(), rows)
    if not note:
        return []
    return [Finding("-", "space", note, paths.STATE_DIR,
                    advice="see `dtenant status`; `limits.disk_max` caps each tenant")]  # fmt: skip


def check_subid_files() -> list[Finding]:
    """Entries another account would be given (a user name of digits that is some other
    account's uid), and ranges of different owners that overlap."""
    from dtenant_session import idmap, subid

    texts = {file: subid.read(file) for file in (subid.SUBUID, subid.SUBGID)}
    problems = [
        problem
        for file, text in texts.items()
        for problem in subid.foreign_keys(text, idmap.uid_of, idmap.user_named, file)
    ]
    problems += subid.overlaps(texts)
    return [Finding("", "ids", problem, advice="key the entry by the owner's uid or move it")
            for problem in problems]  # fmt: skip
