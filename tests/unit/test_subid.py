from __future__ import annotations

import pytest

from dtenant_session import subid

BASE = 1_879_048_192


def test_container_root_is_the_block_and_the_user_keeps_her_id() -> None:
    assert [r.line() for r in subid.keep_id_map(BASE, 1001)] == [
        f"{BASE}:{BASE}:1001",
        f"{BASE}:1001:1",
        f"{BASE}:{BASE + 1002}:64534",
    ]
    # 65536 container ids in all, root first and never the user's own uid.
    ranges = subid.keep_id_map(BASE, 1001)
    assert sum(r.count for r in ranges) == 65536 and ranges[0].start == BASE


def test_an_id_outside_the_block_is_not_kept() -> None:
    assert subid.keep_id_map(BASE, 70000) == [subid.Range(str(BASE), BASE, 65536)]
    assert subid.keep_id_map(BASE, 65535)[-1] == subid.Range(str(BASE), 65535, 1)


def test_plan_appends_the_entries_once_and_replaces_stale_ones() -> None:
    text = "alice:100000:65536\n"
    wanted = subid.keep_id_map(BASE, 1001)
    planned = subid.plan(text, wanted, "/etc/subuid")
    assert planned is not None
    assert planned.splitlines()[0] == "alice:100000:65536"
    assert subid.plan(planned, wanted, "/etc/subuid") is None
    moved = subid.plan(planned, subid.keep_id_map(BASE, 1002), "/etc/subuid")
    assert moved is not None and f"{BASE}:1001:1" not in moved and f"{BASE}:1002:1" in moved


def test_another_entry_in_the_block_is_refused() -> None:
    with pytest.raises(subid.SubidError, match=f"carol:{BASE + 5}:10 overlaps"):
        subid.plan(f"carol:{BASE + 5}:10\n", subid.keep_id_map(BASE, 1001), "/etc/subuid")


def test_docker_takes_the_entries_of_the_uid_string_before_the_name() -> None:
    # The user named "1002" (uid 1015) and bob (uid 1002): Docker maps bob with the
    # entries keyed "1002", whoever wrote them. A tenant account's entries are keyed by
    # its own uid, so they are the ones Docker takes for it.
    text = "1002:100000:65536\nbob:165536:65536\n"
    assert subid.docker_selection(text, 1002, "bob") == [subid.Range("1002", 100000, 65536)]
    assert subid.docker_selection(text, 1003, "bob") == [subid.Range("bob", 165536, 65536)]


def test_without_drops_exact_lines_only() -> None:
    assert subid.without("a:1:1\nb:2:2\n", {"a:1:1"}) == "b:2:2\n"
    assert subid.without("a:1:1\n", {"a:1:2"}) is None


def test_mapping_problems_name_what_docker_would_take_instead() -> None:
    own = {subid.SUBUID: 1001, subid.SUBGID: 1001}
    good = "\n".join(r.line() for r in subid.keep_id_map(BASE, 1001)) + "\n"
    assert subid.mapping_problems({subid.SUBUID: good, subid.SUBGID: good}, BASE, "_d", own) == []
    # A user *named* like the account's uid got a range: Docker would merge it in.
    poisoned = good + f"{BASE}:100000:65536\n"
    problems = subid.mapping_problems({subid.SUBUID: poisoned, subid.SUBGID: good}, BASE, "_d",
                                      own)  # fmt: skip
    assert len(problems) == 1 and f"{BASE}:100000:65536" in problems[0]


def test_entries_of_a_digit_name_that_is_another_uid_are_flagged() -> None:
    accounts = {"1002": 1015, "bob": 1002}
    found = subid.foreign_keys(
        "1002:100000:65536\nbob:165536:65536\n",
        accounts.get,
        {v: k for k, v in accounts.items()}.get,
        "/etc/subuid",
    )
    assert len(found) == 1 and "user named '1002' (uid 1015)" in found[0] and "'bob'" in found[0]


def test_overlapping_ranges_of_different_owners_are_flagged() -> None:
    text = "a:100000:65536\nb:150000:65536\nc:300000:10\na:1001:1\nb:1001:1\n"
    assert subid.overlaps({"/etc/subuid": text}) == [
        "/etc/subuid: a:100000:65536 overlaps b:150000:65536"
    ]


def test_the_host_files_only_reserve_the_block_and_the_daemon_reads_its_own() -> None:
    assert [r.line() for r in subid.reservation(BASE)] == [f"{BASE}:{BASE}:65536"]
    assert subid.private_text(BASE, 1001) == (
        f"{BASE}:{BASE}:1001\n{BASE}:1001:1\n{BASE}:{BASE + 1002}:64534\n"
    )
    # shadow re-sorts the host's file by range start: a reservation survives that.
    text = f"alice:100000:65536\n{BASE}:{BASE}:65536\n"
    assert subid.plan(text, subid.reservation(BASE), "/etc/subuid") is None
