"""The filter of tenant daemons' own traffic: rendered rules and the cgroup facts they
rest on (measured in a lab by tests/sandbox/test_daemon_egress.py)."""

from __future__ import annotations

import dataclasses
from typing import NoReturn

import pytest

from dtenant_session import egress, mountinfo, render
from dtenant_session.config import Network
from dtenant_session.registry import Allocation

ALICE = Allocation("alice", 1000, 1, "10.96.1.0/24", "10.128.16.0/20", 0.0)
HYBRID = "38 30 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup rw\n"
UNIFIED = "38 30 0:33 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"


DEFAULT = Network()


def _rules(net: Network = DEFAULT, own: bool = True) -> str:
    return render.nft_daemon_egress("", [("dtenant-alice.slice", ALICE)] if own else [], net)


@pytest.mark.parametrize(
    ("mounts", "prefix"),
    [(UNIFIED, ""), (HYBRID, "unified/"), ("30 1 0:26 / /sys rw - sysfs sysfs rw\n", None)],
)
def test_the_cgroup2_hierarchy_is_found_where_nft_looks(mounts: str, prefix: str | None) -> None:
    assert egress.cgroup2_prefix(mountinfo.parse(mounts)) == prefix


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("0::/dtenant.slice/dtenant-alice.slice/docker@alice.service\n",
         "dtenant.slice/dtenant-alice.slice"),
        ("12:pids:/x\n0::/dtenant.slice/dtenant-x\\x2dy.slice/docker@x\\x2dy.service\n",
         "dtenant.slice/dtenant-x\\x2dy.slice"),
        ("0::/system.slice/ssh.service\n", None),
        ("0::/dtenant.slice\n", None),
        ("1:name=systemd:/dtenant.slice/dtenant-alice.slice/x\n", None),
    ],
)  # fmt: skip
def test_the_tenant_slice_comes_from_the_cgroup2_line_only(text: str, found: str | None) -> None:
    assert egress.slice_of(text) == found


def test_every_process_of_the_slice_is_matched_at_whatever_level_it_lies() -> None:
    rules = _rules()
    for level in render.CGROUP_LEVELS:
        assert f'socket cgroupv2 level {level} "dtenant.slice" goto daemon_from_{level}' in rules
        assert f"socket cgroupv2 level {level + 1} . ip daddr @daemon_own accept" in rules
    assert "type filter hook output" in rules


def test_replies_pass_and_new_connections_are_refused_at_once() -> None:
    rules = _rules()
    out = rules.index("chain daemon_out")
    assert rules.index("ct state established,related accept") > out  # docker-proxy's replies
    assert rules.index("ct state established,related accept") < rules.index("goto daemon_from")
    assert "drop" not in rules  # a refusal fails connect() at once, with an error


def test_host_addresses_other_tenants_and_listed_networks_are_refused() -> None:
    rules = _rules(Network(daemon_blocked=("169.254.0.0/16", "fe80::/10", "192.0.2.0/24")))
    refusal = "counter reject with icmpx type admin-prohibited"
    assert f"fib daddr type local {refusal}" in rules
    assert f"ip daddr {{ 10.96.0.0/12, 10.128.0.0/9 }} {refusal}" in rules
    assert f"ip daddr {{ 169.254.0.0/16, 192.0.2.0/24 }} {refusal}" in rules
    assert f"ip6 daddr {{ fe80::/10 }} {refusal}" in rules


def test_dns_to_the_hosts_resolver_is_configurable() -> None:
    dns = "fib daddr type local meta l4proto { tcp, udp } th dport 53 accept"
    assert dns in _rules()
    assert dns not in _rules(dataclasses.replace(Network(), daemon_dns=False))
    rules = _rules()
    assert rules.index(dns) < rules.index("fib daddr type local counter")


def test_a_tenant_daemon_reaches_only_its_own_ranges() -> None:
    rules = _rules()
    assert ('"dtenant.slice/dtenant-alice.slice" . 10.96.1.0/24, '
            '"dtenant.slice/dtenant-alice.slice" . 10.128.16.0/20') in rules  # fmt: skip
    assert "elements" not in _rules(own=False).split("chain daemon_out")[0]


def test_an_empty_block_list_renders_no_empty_set() -> None:
    rules = _rules(Network(daemon_blocked=()))
    assert "{  }" not in rules and "ip6 daddr" not in rules


def test_cgroup_paths_nft_would_misread_are_refused() -> None:
    with pytest.raises(egress.EgressError):
        egress.own_elements('dtenant.slice/dtenant-a"b.slice', ["10.96.1.0/24"])


def test_the_egress_chains_live_inside_dtenants_table() -> None:
    table = render.nft_ruleset([ALICE], "strict", _rules())
    assert table.rstrip().endswith("}\n}") or table.rstrip().endswith("}")
    assert table.count("table inet dtenant {") == 1
    assert table.index("chain daemon_out") > table.index("table inet dtenant {")


def test_a_daemon_gets_its_own_ranges_only_in_its_own_slice(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:  # fmt: skip
    """Asked for bob from alice's slice, the element would open bob's ranges to alice's
    processes: refused before the registry or nft is asked."""
    monkeypatch.setattr(mountinfo, "read", lambda: [])
    monkeypatch.setattr(egress, "cgroup2_prefix", lambda _: "")

    def untouched(*_: object) -> NoReturn:
        raise AssertionError("neither the registry nor nft is asked")

    monkeypatch.setattr(egress, "tenant_ranges", untouched)
    alice = "0::/dtenant.slice/dtenant-alice.slice/docker@alice.service\n"
    said = egress.open_own_ranges("bob", alice, untouched)
    assert said == ("its outgoing traffic cannot be filtered: started in dtenant.slice/"
                    "dtenant-alice.slice, not dtenant.slice/dtenant-bob.slice")  # fmt: skip
    # A name systemd escapes: its slice is the escaped one.
    dashed = "0::/dtenant.slice/dtenant-x\\x2dy.slice/docker@x\\x2dy.service\n"
    monkeypatch.setattr(egress, "tenant_ranges", lambda _: ("10.1.0.0/24", "10.2.0.0/16"))
    scripts: list[str] = []
    assert egress.open_own_ranges("x-y", dashed, lambda s: scripts.append(s)) is None
    assert scripts and '"dtenant.slice/dtenant-x\\x2dy.slice" . 10.1.0.0/24' in scripts[0]
