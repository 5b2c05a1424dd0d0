"""network.ensure_bridges: at boot, networkd gets its time; what it leaves is made here."""

from __future__ import annotations

import pytest

from dtenant_session import network
from dtenant_session.registry import Allocation

ALICE = Allocation("alice", 1000, 1, "10.96.0.0/24", "10.128.0.0/20", 0.0, "/home/alice", 0)
BOB = Allocation("bob", 1001, 2, "10.96.1.0/24", "10.128.16.0/20", 0.0, "/home/bob", 0)
CAROL = Allocation("carol", 1002, 3, "10.96.2.0/24", "10.128.32.0/20", 0.0, "/home/carol", 0)


class Host:
    """Links and addresses as networkd makes them, one more bridge per look."""

    def __init__(self, networkd: list[Allocation], running: bool = True) -> None:
        self.links: dict[str, set[str]] = {}
        self.networkd_to_come = list(networkd)
        self.running = running
        self.made: list[str] = []

    def look(self) -> dict[str, set[str]]:
        if self.running and self.networkd_to_come:
            done = self.networkd_to_come.pop(0)
            self.links[done.tenant.bridge] = {done.bridge_address}
        return {name: set(found) for name, found in self.links.items()}

    def ensure(self, allocation: Allocation) -> str:
        if allocation.user == "carol":
            raise network.NetworkError("bridge dtenant3 exists with 10.9.9.1/24")
        self.links[allocation.tenant.bridge] = {allocation.bridge_address}
        self.made.append(allocation.user)
        return "created"


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch) -> Host:
    fake = Host([])
    monkeypatch.setattr(network, "link_addresses", lambda: fake.look())
    monkeypatch.setattr(network, "_networkd_running", lambda: fake.running)
    monkeypatch.setattr(network, "ensure_bridge", fake.ensure)
    return fake


def test_what_networkd_makes_in_time_is_left_to_it(host: Host) -> None:
    host.networkd_to_come = [ALICE, BOB]
    done = network.ensure_bridges([ALICE, BOB], networkd_grace=0.05, poll=0.01)
    assert done == [] and host.made == []


def test_networkd_keeps_its_time_while_it_makes_progress(host: Host) -> None:
    """Each look finds one more bridge: far beyond one grace in all, nothing made here."""
    many = [Allocation(f"u{i}", 2000 + i, 10 + i, f"10.97.{i}.0/24", "10.200.0.0/20", 0.0, "/h", 0)
            for i in range(30)]  # fmt: skip
    host.networkd_to_come = list(many)
    assert network.ensure_bridges(many, networkd_grace=0.03, poll=0.01) == []
    assert host.made == []


def test_without_networkd_every_bridge_is_made_at_once(host: Host) -> None:
    host.running = False
    done = network.ensure_bridges([ALICE, BOB], networkd_grace=60.0, poll=0.01)
    assert host.made == ["alice", "bob"]
    said = "bridge dtenant1 created with 10.96.0.1/24: networkd had not made it"
    assert done[0] == ("alice", said)


def test_one_bridge_that_cannot_be_made_keeps_no_other_down(host: Host) -> None:
    host.running = False
    done = dict(network.ensure_bridges([CAROL, BOB], networkd_grace=0.0, poll=0.01))
    assert host.made == ["bob"]
    assert done["carol"].startswith("bridge not made: bridge dtenant3 exists with")
