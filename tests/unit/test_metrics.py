"""node-exporter's textfile: well formed, nothing made up, written only where a collector
reads (the whole rendering is a golden file: test_golden.py)."""

from __future__ import annotations

import re
from pathlib import Path

from dtenant_session import metrics
from dtenant_session.status import TenantStatus


def _row(user: str, state: str, **values: object) -> TenantStatus:
    base: dict[str, object] = dict(
        user=user, uid=1000, slot=1, bridge="dtenant1", subnet="10.96.0.0/24",
        networks="10.128.0.0/20", socket=f"/run/docker-{user}.sock", socket_state="listening",
        daemon_state=state, running_containers=None, idle_seconds=None, data_root_bytes=None,
        memory_bytes=None, cpu_seconds=None, data_root_note="")  # fmt: skip
    return TenantStatus(**{**base, **values})  # type: ignore[arg-type]


ROWS = [
    _row("bob", "inactive", data_root_bytes=4096),
    _row(
        "alice",
        "running",
        running_containers=2,
        memory_bytes=150_000_000,
        cpu_seconds=12.5,
        data_root_bytes=1 << 30,
    ),
    _row('we"ird\\name', "failed"),
]


def test_every_sample_is_well_formed_and_unknowns_are_left_out() -> None:
    text = metrics.render(ROWS, set(), config_broken=True, now=0.0)
    sample = re.compile(r'[a-z_]+(\{([a-z]+="([^"\\]|\\.)*",?)+\})? -?[0-9.e+]+')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.fullmatch(line), line
    assert 'dtenant_tenant_memory_bytes{user="bob"}' not in text  # unknown: no made-up 0
    assert "dtenant_config_broken 1" in text


def test_nothing_is_written_without_the_collectors_directory(tmp_path: Path) -> None:
    assert not metrics.write(str(tmp_path / "absent" / "dtenant.prom"), "x\n")
    assert not metrics.write("", "x\n")
    assert metrics.write(str(tmp_path / "dtenant.prom"), "x\n")
    assert (tmp_path / "dtenant.prom").read_text() == "x\n"
