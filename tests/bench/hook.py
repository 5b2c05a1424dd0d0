"""Benchmark of the PAM login hook: `.venv/bin/python -m tests.bench.hook`.

Boots a lab, installs this checkout, times the hook inside it, prints the figures and
their ratios to the targets, and writes them as JSON (bench/results/hook.json).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from dtenant_session.lab import host

CHECKOUT = Path(__file__).resolve().parents[2]
HOT_TARGET_RATIO = 1.5  # hot path within 1.5x of the bare interpreter
COLD_TARGET_MS = 300.0


def measure(lab: host.Lab, rounds: int, cold_rounds: int) -> dict[str, float]:
    script = CHECKOUT / "tests" / "bench" / "inlab_hook.py"
    result = lab.run(["/usr/bin/python3", str(script), str(rounds), str(cold_rounds)], timeout=600)
    figures: dict[str, float] = json.loads(result.stdout)
    return figures


def report(figures: dict[str, float]) -> str:
    ratio = figures["hot_ms"] / figures["bare_ms"]
    hot_ok = "met" if ratio <= HOT_TARGET_RATIO else "MISSED"
    cold_ok = "met" if figures["cold_ms"] < COLD_TARGET_MS else "MISSED"
    rows = [
        f"machine: {platform.node()} {platform.machine()}, {len(_cpus())} CPUs",
        f"bare python3 -I -S -c pass   {figures['bare_ms']:7.1f} ms",
        f"hook, hot path               {figures['hot_ms']:7.1f} ms   {ratio:.2f}x bare "
        f"(target <= {HOT_TARGET_RATIO}x: {hot_ok})",
        f"hook, cold path (provision)  {figures['cold_ms']:7.1f} ms   "
        f"max {figures['cold_max_ms']:.1f} ms (target < {COLD_TARGET_MS:.0f} ms: {cold_ok})",
        f"daemons started by the cold path: {figures['daemons_started_by_cold_path']:.0f} "
        "(target 0)",
        f"medians of {figures['rounds']:.0f} hot and {figures['cold_rounds']:.0f} cold runs",
    ]
    return "\n".join(rows)


def _cpus() -> list[str]:
    return [line for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("processor")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--cold-rounds", type=int, default=15)
    parser.add_argument("--output", type=Path, default=CHECKOUT / "bench" / "results" / "hook.json")
    args = parser.parse_args()
    lab = host.up("bench", binds=[CHECKOUT])
    try:
        lab.run([str(CHECKOUT / "packaging" / "install.sh")])
        figures = measure(lab, args.rounds, args.cold_rounds)
    finally:
        host.down("bench")
    print(report(figures))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written: {args.output}")


if __name__ == "__main__":
    main()
