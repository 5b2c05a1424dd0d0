from __future__ import annotations

import ipaddress

import pytest

from dtenant_session import allocate, subid


def _net(text: str) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(text)


def test_first_free_slot_fills_holes() -> None:
    assert allocate.first_free_slot([]) == 1
    assert allocate.first_free_slot([1, 2, 4]) == 3


def test_first_free_subnet_skips_taken_and_routed() -> None:
    chosen = allocate.first_free_subnet(
        "10.96.0.0/22", 24, ["10.96.0.0/24"], [_net("10.96.1.128/25"), _net("0.0.0.0/0")],
        pool_key="network.bridge_pool",
    )  # fmt: skip
    assert chosen == "10.96.2.0/24"


def test_a_route_covering_the_pool_is_avoided_but_not_the_default_route() -> None:
    with pytest.raises(allocate.PoolExhausted):
        allocate.first_free_subnet("10.96.0.0/23", 24, [], [_net("10.0.0.0/8")],
                                   pool_key="network.bridge_pool")  # fmt: skip


def test_exhausted_pool_names_the_key() -> None:
    with pytest.raises(allocate.PoolExhausted, match=r"network\.bridge_pool = 10\.96\.0\.0/23"):
        allocate.first_free_subnet("10.96.0.0/23", 24, ["10.96.0.0/24", "10.96.1.0/24"], [],
                                   pool_key="network.bridge_pool")  # fmt: skip


def test_overlap_with_larger_and_smaller_taken_ranges() -> None:
    taken = ["10.96.0.0/23", "10.96.2.128/25"]
    chosen = allocate.first_free_subnet("10.96.0.0/16", 24, taken, [], pool_key="k")
    assert chosen == "10.96.3.0/24"


def test_a_nearly_full_pool_still_finds_the_gap() -> None:
    subnets = [str(n) for n in ipaddress.IPv4Network("10.96.0.0/12").subnets(new_prefix=24)]
    chosen = allocate.first_free_subnet("10.96.0.0/12", 24, subnets[:3000], [], pool_key="k")
    assert chosen == subnets[3000]


def test_id_blocks_are_aligned_and_stay_below_two_to_the_31() -> None:
    block = subid.ID_BLOCK
    assert allocate.first_free_id_block(block + 1, [], []) == 2 * block
    assert (
        allocate.first_free_id_block(block, [block], [(2 * block + 5, 2 * block + 5)]) == 3 * block
    )
    with pytest.raises(allocate.PoolExhausted, match=r"userns\.subid_base"):
        allocate.first_free_id_block(allocate.ID_LIMIT - block, [allocate.ID_LIMIT - block], [])
