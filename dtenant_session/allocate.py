"""Choosing a tenant's slot and subnets (pure): first free, never overlapping anything."""

from __future__ import annotations

import bisect
import ipaddress
import socket
from collections.abc import Iterable

from dtenant_session.errors import DtenantError
from dtenant_session.subid import ID_BLOCK


class PoolExhausted(DtenantError):
    pass


def first_free_slot(taken: Iterable[int]) -> int:
    used = set(taken)
    slot = 1
    while slot in used:
        slot += 1
    return slot


def _interval(cidr: str) -> tuple[int, int]:
    """'10.96.3.0/24' -> (first, last) address as integers; ipaddress is ~15x slower and a
    pass over thousands of registry rows would feel it."""
    address, _, length = cidr.partition("/")
    start = int.from_bytes(socket.inet_aton(address), "big")
    return start, start + (1 << (32 - int(length or 32))) - 1


class _Intervals:
    """Address ranges as sorted, merged [start, end] integer intervals: overlap in log n."""

    def __init__(self, intervals: Iterable[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def first_overlap_end(self, start: int, end: int) -> int | None:
        """The end of a blocked interval overlapping [start, end], if any."""
        index = bisect.bisect_right(self.starts, end) - 1
        if index >= 0 and self.ends[index] >= start:
            return self.ends[index]
        return None


def first_free_subnet(
    pool: str,
    prefix: int,
    taken: Iterable[str],
    avoid: Iterable[ipaddress.IPv4Network],
    *,
    pool_key: str,
) -> str:
    """The first /prefix of pool that is neither taken nor overlaps a route in avoid."""
    used = [_interval(t) for t in taken]
    routed = [r for r in avoid if r.prefixlen > 0]  # the default route overlaps everything
    blocked = _Intervals(
        [*used, *((int(r.network_address), int(r.broadcast_address)) for r in routed)]
    )
    network = ipaddress.IPv4Network(pool)
    size = 1 << (32 - prefix)
    start, last = int(network.network_address), int(network.broadcast_address)
    while start + size - 1 <= last:
        blocker_end = blocked.first_overlap_end(start, start + size - 1)
        if blocker_end is None:
            return f"{ipaddress.IPv4Address(start)}/{prefix}"
        # Jump to the first aligned candidate after the blocking range.
        start = (blocker_end // size + 1) * size
    raise PoolExhausted(
        f"address pool {pool_key} = {pool} has no free /{prefix} left "
        f"({len(used)} allocated, {len(routed)} routes avoided): enlarge it or add capacity"
    )


ID_LIMIT = 1 << 31  # stay below 2^31: some tools read ids as signed 32-bit numbers


def first_free_id_block(base: int, taken: Iterable[int], avoid: Iterable[tuple[int, int]]) -> int:
    """The first block of ID_BLOCK host ids at or above `base`, aligned on ID_BLOCK, that
    starts no block in `taken` and overlaps no [first, last] range in `avoid` (ranges in
    /etc/subuid and /etc/subgid of other owners, ids of kept data)."""
    blocked = _Intervals([*((t, t + ID_BLOCK - 1) for t in taken), *avoid])
    start = -(-base // ID_BLOCK) * ID_BLOCK
    while start + ID_BLOCK <= ID_LIMIT:
        blocker_end = blocked.first_overlap_end(start, start + ID_BLOCK - 1)
        if blocker_end is None:
            return start
        start = (blocker_end // ID_BLOCK + 1) * ID_BLOCK
    raise PoolExhausted(
        f"no free block of {ID_BLOCK} ids between userns.subid_base = {base} and {ID_LIMIT}: "
        "lower userns.subid_base or remove tenants with --purge"
    )
