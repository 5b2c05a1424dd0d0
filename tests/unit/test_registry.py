from __future__ import annotations

import ipaddress
import multiprocessing
from pathlib import Path

import pytest

from dtenant_session.config import Network
from dtenant_session.registry import IdSpace, Registry, RegistryError

NETWORK = Network(bridge_pool="10.96.0.0/16", networks_pool="10.128.0.0/12")


def test_allocation_is_stable_and_distinct(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite3") as registry:
        alice = registry.allocate("alice", 1000, NETWORK, [])
        bob = registry.allocate("bob", 1001, NETWORK, [])
        assert registry.allocate("alice", 1000, NETWORK, []) == alice
        assert (alice.slot, alice.bridge_subnet, alice.networks_pool) == (
            1, "10.96.0.0/24", "10.128.0.0/20")  # fmt: skip
        assert (bob.slot, bob.bridge_subnet) == (2, "10.96.1.0/24")
        assert alice.bridge_address == "10.96.0.1/24"
        assert registry.problems() == []


def test_a_reused_name_with_another_uid_is_refused(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite3") as registry:
        registry.allocate("alice", 1000, NETWORK, [])
        with pytest.raises(RegistryError, match="now has uid 2000 but the registry holds uid 1000"):
            registry.allocate("alice", 2000, NETWORK, [])


def test_released_ranges_are_reused(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite3") as registry:
        first = registry.allocate("alice", 1000, NETWORK, [])
        registry.allocate("bob", 1001, NETWORK, [])
        registry.remove("alice")
        assert registry.allocate("carol", 1002, NETWORK, []).slot == first.slot


def test_slots_of_existing_bridges_are_skipped(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite3") as registry:
        assert registry.allocate("alice", 1000, NETWORK, [], busy_slots=[1, 2]).slot == 3


def test_routed_subnets_are_avoided(tmp_path: Path) -> None:
    with Registry(tmp_path / "r.sqlite3") as registry:
        routed = [ipaddress.IPv4Network("10.96.0.0/23")]
        assert registry.allocate("alice", 1000, NETWORK, routed).bridge_subnet == "10.96.2.0/24"


def _allocate_many(path: str, start: int) -> None:
    with Registry(Path(path), busy_timeout=30) as registry:
        for index in range(start, start + 10):
            registry.allocate(f"user{index}", 2000 + index, NETWORK, [])


def test_concurrent_processes_never_collide(tmp_path: Path) -> None:
    path = str(tmp_path / "r.sqlite3")
    Registry(Path(path)).close()
    workers = [
        multiprocessing.Process(target=_allocate_many, args=(path, n * 10)) for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with Registry(Path(path)) as registry:
        rows = registry.all()
        assert len(rows) == 40
        assert len({r.bridge_subnet for r in rows}) == 40
        assert registry.problems() == []


def test_a_corrupt_registry_says_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryError, match="is corrupt") as caught:
        Registry(path)
    assert str(path) in str(caught.value)


def test_a_registry_of_version_1_gains_home_and_id_base(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "r.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE tenants (user TEXT PRIMARY KEY, uid INTEGER NOT NULL, slot INTEGER NOT "
        "NULL UNIQUE, bridge_subnet TEXT NOT NULL UNIQUE, networks_pool TEXT NOT NULL UNIQUE, "
        "created REAL NOT NULL); CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '1');"
        "INSERT INTO tenants VALUES ('alice', 1000, 1, '10.96.0.0/24', '10.128.0.0/20', 0);"
    )
    old.commit()
    old.close()
    with Registry(path) as registry:
        alice = registry.get("alice")
        assert alice is not None and (alice.home, alice.id_base) == ("", 0)
        mapped = registry.map_ids("alice", IdSpace(base=1 << 20))
        assert mapped.id_base == 1 << 20 == registry.get("alice").id_base  # type: ignore[union-attr]


def test_id_blocks_are_distinct_and_clear_of_other_ranges(tmp_path: Path) -> None:
    ids = IdSpace(base=1 << 20, avoid=((1 << 20, (1 << 20) + 10),))
    with Registry(tmp_path / "r.sqlite3") as registry:
        alice = registry.allocate("alice", 1000, NETWORK, [], home="/home/alice", ids=ids)
        bob = registry.allocate("bob", 1001, NETWORK, [], ids=ids)
        assert alice.home == "/home/alice"
        assert (alice.id_base, bob.id_base) == ((1 << 20) + 65536, (1 << 20) + 2 * 65536)
        registry.remove("alice")
        assert registry.allocate("carol", 1002, NETWORK, [], ids=ids).id_base == alice.id_base
        assert registry.problems() == []
