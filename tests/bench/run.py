"""dtenant's benchmarks: `.venv/bin/python -m tests.bench.run` (as root).

Boots a lab, installs dtenant's Debian package built from this checkout, runs the in-lab
measurements (inlab_login.py, inlab_scale.py), prints every figure next to its target,
and writes them as JSON and as a plot (tests/bench/results/latest.{json,png}). Figures
are medians over repeated runs; each comparison is measured side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

from tests.bench import peers
from tests.lab import host
from tests.sandbox.conftest import install

CHECKOUT = Path(__file__).resolve().parents[2]
BENCH = CHECKOUT / "tests" / "bench"
RESULTS = BENCH / "results"


def in_lab(lab: host.Lab, script: str, *args: object) -> dict[str, Any]:
    result = lab.run(["/usr/bin/python3", str(BENCH / script), *map(str, args)], timeout=3600)
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def machine() -> str:
    cpus = os.cpu_count()
    memory = Path("/proc/meminfo").read_text().split()[1]
    kernel = platform.release()
    return f"{platform.machine()}, {cpus} CPUs, {int(memory) // 1024 // 1024} GiB, Linux {kernel}"


def report(login: dict[str, Any], scale: dict[str, Any]) -> list[str]:
    first, last = scale["series"][0], scale["series"][-1]
    # Relative to a bare exec measured beside it: the machine's state cancels out.
    drift = ((last["hook_hot_ms"] / last["exec_true_ms"])
             / (first["hook_hot_ms"] / first["exec_true_ms"]) - 1) * 100  # fmt: skip
    rows = [
        ("bare python3 -I -S -c pass", f"{login['bare_ms']} ms", ""),
        ("PAM open_session without the hook", f"{login['pam_without_hook_ms']} ms", ""),
        ("PAM open_session with the hook, hot path",
         f"{login['pam_hot_ms']} ms ({login['hot_over_bare']}x bare)",
         f"<= 1.5x bare: {verdict(login['hot_over_bare'] <= 1.5)}"),
        ("PAM open_session, cold path (first login)",
         f"{login['pam_cold_ms']} ms (max {login['pam_cold_max_ms']})",
         f"< 300 ms: {verdict(login['pam_cold_ms'] < 300)}"),
        ("daemons started by the cold path", f"{login['daemons_started_by_cold_path']}",
         f"0: {verdict(login['daemons_started_by_cold_path'] == 0)}"),
        ("SSH login with / without dtenant",
         f"{login['ssh_login_with_ms']} / {login['ssh_login_without_ms']} ms "
         f"(paired: {login['ssh_overhead_ms']:+} ms, {login['ssh_overhead_percent']:+}%)",
         f"<= 3%: {verdict(login['ssh_overhead_percent'] <= 3)}"),
        ("first docker command (starts the daemon)",
         f"{login['first_command_ms']} ms (max {login['first_command_max_ms']})",
         f"<= 1000 ms: {verdict(login['first_command_ms'] <= 1000)}"),
        ("warm docker ps: tenant / system docker",
         f"{login['warm_tenant_ms']} / {login['warm_system_ms']} ms "
         f"({login['warm_over_system_percent']:+}%)",
         f"within 10%: {verdict(login['warm_over_system_percent'] <= 10)}"),
        ("memory, idle tenant", f"{login['idle_tenant_processes']} processes, 0 MiB",
         "no daemon process"),
        ("memory, active tenant (dockerd with its own containerd + plugin)",
         f"{login['active_tenant_rss_mib']} MiB ({login['active_dockerd_rss_mib']} + "
         f"{login['active_plugin_rss_mib']})", "0.1: 88.1 MiB, containerd shared"),
        ("memory, always-on dockerd + containerd per user",
         f"{login['always_on_per_user_rss_mib']} MiB", "the original write-up"),
        (f"hook hot path at {first['tenants']} / {last['tenants']} tenants",
         f"{first['hook_hot_ms']} / {last['hook_hot_ms']} ms ({drift:+.1f}% vs /bin/true)",
         f"+-10%: {verdict(abs(drift) <= 10)}"),
        (f"dtenant status, {last['tenants']} tenants", f"{last['status_ms']} ms",
         f"<= 1000 ms: {verdict(last['status_ms'] <= 1000)}"),
        (f"reap pass, {last['tenants']} tenants", f"{last['reap_pass_ms']} ms",
         f"<= 2000 ms: {verdict(last['reap_pass_ms'] <= 2000)}; daemons started "
         f"{last['daemons_started_by_reap']}"),
        (f"dtenant verify, {last['tenants']} tenants", f"{last['verify_ms']} ms", ""),
        (f"pre-start check at {first['tenants']} / {last['tenants']} tenants",
         f"{first['check_tenant_ms']} / {last['check_tenant_ms']} ms (in a process of its own: "
         f"{first['check_tenant_direct_ms']} / {last['check_tenant_direct_ms']})",
         f"a few ms: {verdict(first['check_tenant_ms'] < 5)}; < 100 ms at "
         f"{last['tenants']}: {verdict(last['check_tenant_ms'] < 100)}"),
        (f"firewall sync, {last['tenants']} tenants", f"{last['firewall_sync_ms']} ms", ""),
        ("50 concurrent first logins",
         f"{scale['concurrent_logins_ok']}/{scale['concurrent_logins']} ok in "
         f"{scale['concurrent_logins_total_s']} s "
         f"(without dtenant: {scale['concurrent_logins_without_dtenant_s']} s)",
         f"all succeed: {verdict(scale['concurrent_logins_ok'] == scale['concurrent_logins'])}"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"machine: {machine()}, in a lab"]
    lines += [f"{name:<{width}}  {value:<36}  {target}" for name, value, target in rows]
    return lines


PEER_MEASURES = (
    ("api_containers", "200 x containers/json"),
    ("api_inspect", "200 x image inspect"),
    ("warm_ps", "warm ps"),
    ("run_rm", "run --rm true"),
    ("cold", "first command"),
)


def figure(side: dict[str, Any], measure: str) -> str:
    if measure not in side:
        return "-"
    return f"{side[measure]['median_ms']} (p90 {side[measure]['p90_ms']})"


def peer_report(peers: dict[str, Any]) -> list[str]:
    """dtenant beside its peers (ms, median and p90), then the targets of issue 17."""
    sides: dict[str, Any] = peers["sides"]
    names = list(sides)
    width = max(len(n) for n in [*names, *peers["unavailable"]]) + 2
    memory = f"memory MiB (median of {peers.get('memory_samples', 1)} samples)"
    lines = ["", f"{'ms, median (p90)':<{width}}" + "".join(f"{t:<22}" for _, t in PEER_MEASURES)
             + memory]  # fmt: skip
    for name in names:
        row = "".join(f"{figure(sides[name], m):<22}" for m, _ in PEER_MEASURES)
        lines.append(f"{name:<{width}}{row}{peers['memory_mib'].get(name, '-')}")
    for name, reason in peers["unavailable"].items():
        lines.append(f"{name:<{width}}cannot run here: {reason}")
    lines += ["", *peer_targets(peers)]
    return lines


def ratio(sides: dict[str, Any], a: str, b: str, measure: str, at: str = "median_ms") -> float:
    return round(float(sides[a][measure][at]) / float(sides[b][measure][at]), 2)


def peer_targets(peers: dict[str, Any]) -> list[str]:
    sides, memory = peers["sides"], peers["memory_mib"]
    tenant, system, floor = (
        "dtenant",
        "system docker.service",
        "floor: dtenant daemon, no-op plugin",
    )
    plugin = [ratio(sides, tenant, floor, m, at) for m in ("api_containers", "api_inspect")
              for at in ("median_ms", "p90_ms")]  # fmt: skip
    proxy = ratio(sides, "plain dockerd, pass-through proxy", "plain dockerd, no-op plugin",
                  "api_containers")  # fmt: skip
    run_rm = ratio(sides, tenant, system, "run_rm")
    run_rm_plugin = ratio(sides, tenant, floor, "run_rm")
    warm = ratio(sides, tenant, system, "warm_ps")
    cold = sides[tenant]["cold"]["p90_ms"]
    over = round(memory[tenant] / memory[system], 2)
    return [
        f"plugin against the no-op floor, 200 calls (median/p90, both calls): {plugin} "
        f"<= 1.15x: {verdict(max(plugin) <= 1.15)}",
        f"pass-through proxy against the no-op plugin (plain dockerd, 200 calls): {proxy}x",
        f"run --rm against the system daemon: {run_rm}x <= 1.1x: {verdict(run_rm <= 1.1)} "
        f"(against the same daemon with a no-op plugin: {run_rm_plugin}x)",
        f"warm ps against the system daemon: {warm}x <= 1.1x: {verdict(warm <= 1.1)}",
        f"first command after a stop, p90: {cold} ms < 1000 ms: {verdict(cold < 1000)}",
        f"memory, active tenant against system dockerd + containerd: {over}x "
        f"<= 1.1x: {verdict(over <= 1.1)}",
    ]


def plot(login: dict[str, Any], scale: dict[str, Any], side: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    series = scale["series"]
    sizes = [s["tenants"] for s in series]
    figure, (timing, memory, beside) = pyplot.subplots(1, 3, figsize=(17, 4.5))
    timing.plot(sizes, [s["hook_hot_ms"] for s in series], marker="o", label="PAM hook, hot path")
    timing.plot(sizes, [s["reap_pass_ms"] for s in series], marker="s", label="reaper pass")
    timing.plot(sizes, [s["status_ms"] for s in series], marker="^", label="dtenant status")
    timing.set_xlabel("registered tenants")
    timing.set_yscale("log")
    timing.set_ylabel("ms (median, log scale)")
    timing.set_title("time against the number of tenants")
    timing.legend()
    timing.grid(alpha=0.3)
    labels = ["dtenant\nidle", "dtenant\nactive", "always-on\ndockerd+containerd"]
    values = [0.0, login["active_tenant_rss_mib"], login["always_on_per_user_rss_mib"]]
    bars = memory.bar(labels, values, color=["#7aa6c2", "#2f6f97", "#c26b4a"])
    memory.bar_label(bars, fmt="%.1f MiB")
    memory.set_ylabel("RSS per user, MiB")
    memory.set_title("memory per tenant")
    plot_peers(beside, side)
    figure.tight_layout()
    figure.savefig(output, dpi=110)


def plot_peers(axes: Any, side: dict[str, Any]) -> None:
    """Per-request cost (200 raw calls) of dtenant beside its peers and the floors."""
    sides = side["sides"]
    names = [n for n in sides if "api_containers" in sides[n]]
    medians = [sides[n]["api_containers"]["median_ms"] / 200 for n in names]
    bars = axes.barh([n.replace(": ", ":\n") for n in names], medians, color="#2f6f97")
    axes.bar_label(bars, fmt="%.2f ms")
    axes.invert_yaxis()
    axes.set_xlabel("ms per API call (containers/json, median of 200-call runs)")
    axes.set_title("dtenant beside its peers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30, help="runs per timed figure")
    parser.add_argument("--cold-rounds", type=int, default=15, help="first logins timed")
    parser.add_argument("--sizes", default="10,250,500,1000", help="tenants registered")
    parser.add_argument("--active", type=int, default=3, help="tenants with a daemon running")
    parser.add_argument("--how", choices=("deb", "script"), default="deb")
    parser.add_argument("--peer-rounds", type=int, default=20, help="rounds of the peer section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dtenant-bench-") as packages:
        # The peers' Debian packages, fetched here (the lab has no network), installed there.
        problems = peers.fetch_packages(Path(packages))
        lab = host.up("bench", binds=[CHECKOUT, Path(packages)])
        try:
            lab.configure_sshd("/etc/ssh/sshd_config.d/bench.conf", "MaxStartups 200\n")
            install(lab, args.how)
            login = in_lab(lab, "inlab_login.py", args.rounds, args.cold_rounds)
            side = in_lab(lab, "inlab_peers.py", args.peer_rounds, max(3, args.cold_rounds // 2),
                          "-" if problems else packages)  # fmt: skip
            scale = in_lab(lab, "inlab_scale.py", args.sizes, args.active, 5)
        finally:
            host.down("bench")
    if problems:
        side["unavailable"] |= {"packages": "; ".join(problems)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "login": login, "scale": scale, "peers": side}
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(login, scale, side, RESULTS / "latest.png")
    print("\n".join(report(login, scale) + peer_report(side)))
    print(f"written: {RESULTS / 'latest.json'}, {RESULTS / 'latest.png'}")


if __name__ == "__main__":
    main()
