from __future__ import annotations

import pytest

from dtenant_session import subid

FALLBACK = subid.Range("carol", 3_000_000_000, 65536)


def test_local_user_gets_own_id_before_its_range() -> None:
    text = "alice:100000:65536\nbob:165536:65536\n"
    planned = subid.plan(text, "alice", 1001, FALLBACK, "/etc/subuid")
    assert planned == "alice:1001:1\nalice:100000:65536\nbob:165536:65536\n"
    assert subid.plan(planned, "alice", 1001, FALLBACK, "/etc/subuid") is None


def test_directory_user_gets_a_range_from_its_slot() -> None:
    planned = subid.plan("alice:100000:65536\n", "carol", 2001, FALLBACK, "/etc/subuid")
    assert planned == "alice:100000:65536\ncarol:2001:1\ncarol:3000000000:65536\n"
    assert subid.slot_range("carol", 3, 3_000_000_000).start == 3_000_131_072


def test_a_fallback_range_never_overlaps_another() -> None:
    text = "dave:3000000000:100\n"
    with pytest.raises(subid.SubidError, match="overlaps dave:3000000000:100"):
        subid.plan(text, "carol", 2001, FALLBACK, "/etc/subuid")
