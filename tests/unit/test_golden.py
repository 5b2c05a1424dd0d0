"""Every file dtenant renders, whole, against a golden copy in tests/unit/golden/.

A change to a rendered file shows here as a diff to review. After a deliberate change:
`DTENANT_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py` and
commit the new golden files with it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dtenant_session import metrics, render
from dtenant_session.config import Config, Eligibility, Limits
from dtenant_session.registry import Allocation
from tests.unit import test_metrics

GOLDEN = Path(__file__).with_name("golden")
ALICE = Allocation("alice", 1000, 3, "10.96.2.0/24", "10.128.32.0/20", 0.0, "/home/alice",
                   0x70000000)  # fmt: skip
DIGITS = Allocation("1002", 1003, 7, "10.96.6.0/24", "10.128.96.0/20", 0.0, "/srv/1002",
                    0x70010000)  # fmt: skip
LIMITED = Config(eligibility=Eligibility(min_uid=2000, groups=("docker-users",), deny=("bob",)),
                 limits=Limits(memory_max="8G", cpu_quota="200%", tasks_max="4096"))  # fmt: skip

RENDERED: dict[str, Callable[[], str]] = {
    "metrics.prom": lambda: metrics.render(
        test_metrics.ROWS, {"bob"}, config_broken=False, now=1_700_000_000.25
    ),
    "alice.netdev": lambda: render.netdev(ALICE),
    "alice.network": lambda: render.network(ALICE),
    "alice.daemon.json": lambda: render.daemon_json(ALICE, Config()),
    "1002.daemon.json": lambda: render.daemon_json(DIGITS, Config()),
    "alice.service-dropin.conf": lambda: render.service_dropin(ALICE, ["/home/alice", "/s/a_b"]),
    "alice.socket-dropin.conf": lambda: render.socket_dropin(ALICE),
    "slice-limits.conf": lambda: render.slice_limits(LIMITED),
    "reap-timer.conf": lambda: render.reap_timer_dropin(Config()),
    "pam-snippet": lambda: render.pam_snippet(),
    "ruleset.nft": lambda: render.nft_ruleset([ALICE, DIGITS], "strict"),
    "ruleset-open.nft": lambda: render.nft_ruleset([ALICE], "open"),
    "add-alice.nft": lambda: render.nft_add_tenant(ALICE),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RENDERED))
def test_rendered_files_match_their_golden_copy(name: str) -> None:
    rendered = RENDERED[name]()
    golden = GOLDEN / name
    if os.environ.get("DTENANT_UPDATE_GOLDEN") == "1":
        golden.write_text(rendered)
    assert golden.exists(), f"no golden copy of {name}: set DTENANT_UPDATE_GOLDEN=1 once"
    assert rendered == golden.read_text()


def test_every_golden_file_is_still_rendered() -> None:
    assert sorted(p.name for p in GOLDEN.iterdir()) == sorted(RENDERED)
