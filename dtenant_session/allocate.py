"""Choosing a tenant's slot and subnets (pure): first free, never overlapping anything."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from dtenant_session.errors import DtenantError


class PoolExhausted(DtenantError):
    pass


def first_free_slot(taken: Iterable[int]) -> int:
    used = set(taken)
    slot = 1
    while slot in used:
        slot += 1
    return slot


def first_free_subnet(
    pool: str,
    prefix: int,
    taken: Iterable[str],
    avoid: Iterable[ipaddress.IPv4Network],
    *,
    pool_key: str,
) -> str:
    """The first /prefix of pool that is neither taken nor overlaps a route in avoid."""
    used = {ipaddress.IPv4Network(t) for t in taken}
    routed = [r for r in avoid if r.prefixlen > 0]  # the default route overlaps everything
    for candidate in ipaddress.IPv4Network(pool).subnets(new_prefix=prefix):
        if any(candidate.overlaps(u) for u in used):
            continue
        if any(candidate.overlaps(r) for r in routed):
            continue
        return str(candidate)
    raise PoolExhausted(
        f"address pool {pool_key} = {pool} has no free /{prefix} left "
        f"({len(used)} allocated, {len(routed)} routes avoided): enlarge it or add capacity"
    )
