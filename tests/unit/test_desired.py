"""A tenant's desired state: provisioning, verify, recovery and removal agree on it."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from dtenant_session import desired, ownerstamp
from dtenant_session.config import Config, Limits
from dtenant_session.registry import Allocation

TENANTS = [
    Allocation("alice", 1000, 3, "10.96.2.0/24", "10.128.32.0/20", 0.0, "/home/alice", 0x70000000),
    Allocation("1002", 1003, 7, "10.96.6.0/24", "10.128.96.0/20", 0.0, "/srv/1002", 0x70010000),
    Allocation("default", 4242, 1022, "10.111.253.0/24", "10.255.224.0/20", 0.0, "/h/d",
               0x70FF0000),
    Allocation("o.k-user_", 59999, 0, "10.96.0.0/24", "10.128.0.0/20", 0.0, "/home/o",
               0x7FFE0000),
]  # fmt: skip
ACCOUNT = desired.Account(gid=100, bind_roots=("/home/x",))


def _as_written(wanted: desired.TenantState) -> dict[Path, str]:
    """The disk after provisioning: its files, and the owner stamp it claims."""
    disk = {f.path: f.content for f in wanted.files}
    stamp = {**wanted.owner, "machine_id": "m", "hostname": "h", "created": 1.0}
    disk[Path(ownerstamp.path(wanted.allocation.user))] = json.dumps(stamp)
    return disk


def _observed(wanted: desired.TenantState, disk: dict[Path, str]) -> desired.Observed:
    modes = {f.path: f.mode for f in wanted.files}
    return desired.Observed(
        files={path: (content, modes[path]) for path, content in disk.items() if path in modes},
        directories={d.path: (d.uid, d.gid, d.mode) for d in wanted.directories},
        enabled=frozenset(wanted.enabled),
        bridge_addresses=frozenset({wanted.bridge_address}),
        firewall={name: frozenset(elements) for name, elements in wanted.firewall.items()},
    )


CAPPED = Config(limits=Limits(disk_max="20G"))


@pytest.mark.parametrize("allocation", TENANTS, ids=[a.user for a in TENANTS])
@pytest.mark.parametrize("config", [Config(), CAPPED], ids=["uncapped", "capped"])
def test_provision_verify_recover_and_remove_agree(allocation: Allocation, config: Config
                                                   ) -> None:  # fmt: skip
    wanted = desired.state(allocation, config, ACCOUNT)
    disk = _as_written(wanted)
    # verify: the host as provisioning leaves it differs in nothing
    assert desired.differences(wanted, _observed(wanted, disk)) == []
    # recovery: the registry entry read back from those files
    recovered = desired.recovered(allocation.user, disk.__getitem__, 5.0, home=allocation.home)
    assert recovered == replace(allocation, created=5.0)
    # removal: what it deletes (host files, units) plus the data it keeps or purges is
    # everything provisioning made; the layout names the same things whatever the account
    layout = desired.layout(allocation)
    state_dir = allocation.tenant.state_dir
    kept = {f.path for f in wanted.files if state_dir in f.path.parents}
    # (its disk's mount unit whether or not it is capped now: a cap may have been removed)
    disk_unit = Path("/etc/systemd/system") / allocation.tenant.disk_unit
    assert set(layout.host_files) | kept == {f.path for f in wanted.files} | {disk_unit}
    assert set(layout.mounts) == {allocation.tenant.disk_unit}
    assert set(wanted.mounts) <= set(layout.mounts)
    assert all(state_dir in d.path.parents or d.path == state_dir or
               d.path.parent == allocation.tenant.run_dir.parent
               for d in layout.directories)  # fmt: skip
    assert (layout.units, layout.enabled, layout.bridge, layout.firewall) == (
        wanted.units, wanted.enabled, wanted.bridge, wanted.firewall)  # fmt: skip


def test_every_kind_of_difference_is_named() -> None:
    wanted = desired.state(TENANTS[0], Config(), ACCOUNT)
    seen = _observed(wanted, _as_written(wanted))
    daemon_json, subuid = wanted.files[0].path, wanted.files[1].path
    bundle = wanted.directories[-1].path
    broken = desired.Observed(
        files={**seen.files, daemon_json: ("{}", 0o600), subuid: None,
               wanted.files[3].path: (wanted.files[3].content, 0o666)},
        directories={**seen.directories, bundle: (0, 0, 0o755)},
        enabled=frozenset(),
        bridge_addresses=frozenset(),
        firewall={"tenant_nets": frozenset(), "same_tenant": frozenset()},
    )  # fmt: skip
    problems = [problem for _, problem, _ in desired.differences(wanted, broken)]
    assert f"{daemon_json} differs from the registry and config" in problems
    assert f"{subuid} is missing" in problems
    assert f"{wanted.files[3].path} has mode 666, not 644" in problems
    id_base = TENANTS[0].id_base
    assert f"{bundle} is 0:0 755, not {id_base}:{id_base} 700" in problems
    assert "docker@alice.socket is not enabled" in problems
    assert "bridge dtenant3 lacks its address (10.96.2.1/24)" in problems
    assert "10.96.2.0/24 is not in dtenant's set tenant_nets" in problems
    assert len(problems) == 3 + 1 + 1 + 1 + 2 + 4  # files, directory, unit, bridge, elements


def test_recovery_names_what_it_cannot_read() -> None:
    wanted = desired.state(TENANTS[0], Config(), ACCOUNT)
    disk = _as_written(wanted)
    del disk[wanted.allocation.tenant.network_file]

    def read(path: Path) -> str:
        if path not in disk:
            raise FileNotFoundError(os.strerror(2) + f": {path}")
        return disk[path]

    with pytest.raises(desired.Unrecoverable, match=r"alice: cannot recover .*60-dtenant3"):
        desired.recovered("alice", read, 0.0, home="")


def test_a_tenant_of_0_1_is_recovered_without_ids_of_its_own() -> None:
    assert desired.id_base_of("alice") == 0
    assert desired.id_base_of("_dtenant28672") == 0x70000000
    assert desired.id_base_of("_dtenantX") == 0


def test_a_capped_tenant_has_its_own_disk_mounted_before_its_daemon() -> None:
    t = TENANTS[0].tenant
    wanted = desired.state(TENANTS[0], CAPPED, ACCOUNT)
    assert wanted.disk_size == 20 << 30
    text = {f.path: f.content for f in wanted.files}
    mount = text[Path("/etc/systemd/system") / t.disk_unit]
    assert f"What={t.disk_image}\n" in mount and f"Where={t.data_root}\n" in mount
    assert "Type=ext4\n" in mount
    assert f"Wants={t.disk_unit}\nAfter={t.disk_unit}\n" in text[t.service_dropin]
    # the image goes with the tenant's data (kept unless purged), out of its daemon's sight
    assert t.state_dir in t.disk_image.parents
    uncapped = desired.state(TENANTS[0], Config(), ACCOUNT)
    assert "Wants=" not in {f.path: f.content for f in uncapped.files}[t.service_dropin]
    assert uncapped.mounts == () and uncapped.disk_size == 0
