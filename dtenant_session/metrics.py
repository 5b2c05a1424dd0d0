"""Metrics for monitoring: every tenant's state, memory, CPU, disk and containers in
Prometheus' text format, for node-exporter's textfile collector (Debian's
prometheus-node-exporter reads /var/lib/prometheus/node-exporter/*.prom).

Each reaper pass rewrites the file (atomically: the collector never reads half of it),
unless reap.metrics_file is "" or its directory does not exist (no node-exporter here).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from dtenant_session import files
from dtenant_session.status import TenantStatus

PREFIX = "dtenant"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# name, type, help, value of a row (None: not known, no sample)
Metric = tuple[str, str, str]
METRICS: list[Metric] = [
    ("tenant_daemon_up", "gauge", "1 when the tenant's Docker daemon runs, else 0"),
    ("tenant_running_containers", "gauge", "running containers of the tenant's daemon"),
    ("tenant_memory_bytes", "gauge",
     "memory of the tenant's slice: daemon, containerd, plugin, containers"),
    ("tenant_cpu_seconds_total", "counter", "CPU time of the tenant's slice since it started"),
    ("tenant_data_root_bytes", "gauge",
     "disk used by the tenant's data-root, as the reaper last measured it (a lower bound "
     "when the measurement hit its budget)"),
    ("tenant_disabled", "gauge", "1 when the administrator disabled the tenant"),
]  # fmt: skip


def _value(name: str, row: TenantStatus, disabled: set[str]) -> float | None:
    values: dict[str, float | None] = {
        "tenant_daemon_up": 1 if row.daemon_state == "running" else 0,
        "tenant_running_containers": row.running_containers,
        "tenant_memory_bytes": row.memory_bytes,
        "tenant_cpu_seconds_total": row.cpu_seconds,
        "tenant_data_root_bytes": row.data_root_bytes,
        "tenant_disabled": 1 if row.user in disabled else 0,
    }
    return values[name]


def render(rows: Iterable[TenantStatus], disabled: set[str], *, config_broken: bool,
           now: float) -> str:  # fmt: skip
    """The whole file (pure). Unknown values get no sample rather than a made-up 0."""
    rows = sorted(rows, key=lambda r: r.user)
    lines = [f"# HELP {PREFIX}_tenant_state state of the tenant's daemon (systemd's), as a label",
             f"# TYPE {PREFIX}_tenant_state gauge"]  # fmt: skip
    for r in rows:
        labels = f'user="{_escape(r.user)}",state="{_escape(r.daemon_state)}"'
        lines.append(f"{PREFIX}_tenant_state{{{labels}}} 1")
    for name, kind, text in METRICS:
        lines += [f"# HELP {PREFIX}_{name} {text}", f"# TYPE {PREFIX}_{name} {kind}"]
        for row in rows:
            value = _value(name, row, disabled)
            if value is not None:
                lines.append(f'{PREFIX}_{name}{{user="{_escape(row.user)}"}} {_number(value)}')
    lines += [
        f"# HELP {PREFIX}_tenants registered tenants",
        f"# TYPE {PREFIX}_tenants gauge",
        f"{PREFIX}_tenants {len(rows)}",
        f"# HELP {PREFIX}_config_broken 1 when the configuration cannot be read: the reaper "
        "runs with its last good settings",
        f"# TYPE {PREFIX}_config_broken gauge",
        f"{PREFIX}_config_broken {1 if config_broken else 0}",
        f"# HELP {PREFIX}_reap_timestamp_seconds when the reaper last wrote these metrics",
        f"# TYPE {PREFIX}_reap_timestamp_seconds gauge",
        f"{PREFIX}_reap_timestamp_seconds {_number(round(now, 3))}",
    ]
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> bool:
    """Replace the file at once; False (nothing written) when path is "" or its directory
    does not exist."""
    if not path or not os.path.isdir(os.path.dirname(path)):
        return False
    files.replace(path, text, 0o644)
    return True
