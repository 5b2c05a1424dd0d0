"""dtenant's benchmarks: `.venv/bin/python -m tests.bench.run` (as root).

Boots a lab, installs this checkout, runs the in-lab measurements, prints each figure
next to its target and writes them all as JSON (bench/results/latest.json). Figures are
medians over repeated runs, each comparison measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from dtenant_session.lab import host

CHECKOUT = Path(__file__).resolve().parents[2]
BENCH = CHECKOUT / "tests" / "bench"


def in_lab(lab: host.Lab, script: str, *args: int) -> dict[str, Any]:
    result = lab.run(["/usr/bin/python3", str(BENCH / script), *map(str, args)], timeout=1800)
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(hook: dict[str, Any], scale: dict[str, Any]) -> list[str]:
    ratio = hook["hot_ms"] / hook["bare_ms"]
    return [
        f"machine: {platform.node()} {platform.machine()}, {_cpus()} CPUs, in a lab",
        f"bare python3 -I -S -c pass      {hook['bare_ms']:8.1f} ms",
        f"PAM hook, hot path              {hook['hot_ms']:8.1f} ms  {ratio:.2f}x bare"
        f"  (target <= 1.5x: {verdict(ratio <= 1.5)})",
        f"PAM hook, cold path (provision) {hook['cold_ms']:8.1f} ms  max {hook['cold_max_ms']:.0f}"
        f"  (target < 300 ms: {verdict(hook['cold_ms'] < 300)}); daemons started: "
        f"{hook['daemons_started_by_cold_path']}",
        f"tenants registered / active     {scale['tenants']:8d} / {scale['active']}",
        f"registry allocation, each       {scale['allocation_ms_each']:8.1f} ms",
        f"reap pass (dtenant reap)        {scale['reap_pass_ms']:8.1f} ms"
        f"  (target <= 2000 ms: {verdict(scale['reap_pass_ms'] <= 2000)}); daemons started: "
        f"{scale['daemons_started_by_reap']} (target 0)",
        f"dtenant status                  {scale['status_ms']:8.1f} ms"
        f"  (target <= 1000 ms: {verdict(scale['status_ms'] <= 1000)})",
        f"dtenant verify                  {scale['verify_ms']:8.1f} ms",
        f"pre-start check (check-tenant)  {scale['check_tenant_ms']:8.1f} ms"
        f"  (target < 100 ms: {verdict(scale['check_tenant_ms'] < 100)})",
    ]


def _cpus() -> int:
    return sum(
        line.startswith("processor") for line in Path("/proc/cpuinfo").read_text().splitlines()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40, help="runs per hook figure")
    parser.add_argument("--cold-rounds", type=int, default=15, help="first logins timed")
    parser.add_argument("--tenants", type=int, default=1000, help="registered tenants")
    parser.add_argument("--active", type=int, default=3, help="of which with a running daemon")
    parser.add_argument(
        "--output", type=Path, default=CHECKOUT / "bench" / "results" / "latest.json"
    )
    args = parser.parse_args()
    lab = host.up("bench", binds=[CHECKOUT])
    try:
        lab.run([str(CHECKOUT / "packaging" / "install.sh")])
        hook = in_lab(lab, "inlab_hook.py", args.rounds, args.cold_rounds)
        scale = in_lab(lab, "inlab_scale.py", args.tenants - args.active, args.active, 5)
    finally:
        host.down("bench")
    print("\n".join(report(hook, scale)))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"hook": hook, "scale": scale}, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
