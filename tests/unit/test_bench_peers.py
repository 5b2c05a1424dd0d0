"""The pure parts of the benchmark's peers (tests/bench/peers.py)."""

from __future__ import annotations

from tests.bench import peers

SIMULATION = """\
NOTE: This is only a simulation!
Inst login [1:4.13+dfsg1-1+deb12u1] (1:4.13+dfsg1-1+deb12u2 Debian:12.15/oldstable [amd64])
Inst conmon (2.1.6+ds1-1 Debian:12.15/oldstable [amd64])
Conf conmon (2.1.6+ds1-1 Debian:12.15/oldstable [amd64])
Inst golang-github-containers-image (5.23.1-4 Debian:12.15/oldstable [all])
"""


def test_planned_installs_are_the_inst_lines_new_and_upgraded() -> None:
    assert peers.planned_installs(SIMULATION) == [
        ("login", "1:4.13+dfsg1-1+deb12u2"),
        ("conmon", "2.1.6+ds1-1"),
        ("golang-github-containers-image", "5.23.1-4"),
    ]


def test_free_subid_block_is_above_every_range_of_both_files_and_aligned() -> None:
    subuid = "alice:100000:65536\n1879048192:1879048192:65536\n"
    subgid = "bob:1879113728:70000\n# a comment\nbroken line\n"
    start = peers.free_subid_start([subuid, subgid])
    assert start == 1879244800  # 1879113728 + 70000, rounded up to a multiple of 65536
    assert start % 65536 == 0


def test_free_subid_block_of_empty_files_starts_where_shadow_starts() -> None:
    assert peers.free_subid_start(["", ""]) == 131072  # 100000 rounded up
