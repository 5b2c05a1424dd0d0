"""Runs inside a lab with dtenant installed: the admin side at scale. Prints JSON.

1,000 registered tenants (registry rows, no daemons) plus a few active ones with running
daemons: one reaper pass (`dtenant reap --dry-run`, the whole command), `dtenant status`,
`dtenant verify`, and the ExecStartPre check of one tenant.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

sys.path.append("/usr/lib/python3/dist-packages")

from dtenant_session.config import load
from dtenant_session.registry import Registry


def timed(argv: list[str], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(argv, check=False, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000


def active_units() -> list[str]:
    argv = ["systemctl", "list-units", "--state=active", "--no-legend", "--plain",
            "docker@*.service"]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    return sorted(line.split()[0] for line in out.stdout.splitlines() if line.strip())


def main() -> None:
    ghosts, active, rounds = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    for index in range(active):
        user = f"active{index}"
        subprocess.run(["useradd", "--create-home", user], check=True)
        subprocess.run(["dtenant", "provision", user], check=True, capture_output=True)
        subprocess.run(["runuser", "-u", user, "--", "docker", "-H", f"unix:///run/docker-{user}.sock",
                        "ps"], check=True, capture_output=True)  # fmt: skip
    network = load().network
    started = time.perf_counter()
    with Registry() as registry:
        for index in range(ghosts):
            registry.allocate(f"ghost{index}", 300000 + index, network, [])
    allocation_ms = (time.perf_counter() - started) * 1000 / max(ghosts, 1)
    before = active_units()
    figures = {
        "tenants": ghosts + active,
        "active": active,
        "allocation_ms_each": allocation_ms,
        "reap_pass_ms": timed(["dtenant", "reap", "--dry-run"], rounds),
        "status_ms": timed(["dtenant", "status"], rounds),
        "verify_ms": timed(["dtenant", "verify"], 1),
        "check_tenant_ms": timed(["/usr/lib/dtenant/check-tenant", "active0"], rounds),
    }
    figures["daemons_started_by_reap"] = len(set(active_units()) - set(before))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
