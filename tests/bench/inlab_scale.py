"""Runs inside a lab with dtenant installed (as root): the admin side at scale. JSON out.

For each size in a series (say 10, 250, 500, 1000 registered tenants, of which a few run
a daemon): the login hook's hot path, one reaper pass, `dtenant status`, `dtenant verify`,
the pre-start check and a firewall sync. Registered tenants beyond the active ones are
registry rows with their networkd files and bridges, without a passwd entry or a daemon.
Then 50 concurrent first logins over SSH.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.append("/usr/lib/python3/dist-packages")

from dtenant_session import render
from dtenant_session.config import load
from dtenant_session.registry import Registry


def run(argv: list[str], env: dict[str, str] | None = None) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env).stdout


def timed_ms(argv: list[str], rounds: int, env: dict[str, str] | None = None) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(argv, check=False, capture_output=True, env=env)
        samples.append(time.perf_counter() - started)
    return round(statistics.median(samples) * 1000, 2)


def interleaved_ms(first: list[str], second: list[str], rounds: int,
                   env: dict[str, str] | None = None) -> tuple[float, float]:  # fmt: skip
    """Medians of two commands run turn about: both see the same moments of the machine."""
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for argv, bucket in ((first, samples[0]), (second, samples[1])):
            started = time.perf_counter()
            subprocess.run(argv, check=False, capture_output=True, env=env)
            bucket.append(time.perf_counter() - started)
    return (round(statistics.median(samples[0]) * 1000, 3),
            round(statistics.median(samples[1]) * 1000, 3))  # fmt: skip


# A tenant whose daemon ran once and was stopped: what a start after an idle stop checks.
STOPPED = "stopped0"
# Run in the tenant's slice, as ExecStartPre is (the traffic filter is probed from there):
# the check through its server, the same in a process of its own, and /bin/true, turn
# about; one scope for all (a scope's own start costs more than the check).
CHECK_TIMING = """
import json, statistics, subprocess, sys, time
rounds, user = int(sys.argv[1]), sys.argv[2]
argvs = {"server": ["/usr/lib/dtenant/check-tenant", user],
         "direct": ["/usr/lib/dtenant/check-tenant-direct", user], "true": ["/bin/true"]}
samples = {name: [] for name in argvs}
for _ in range(rounds):
    for name, argv in argvs.items():
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        samples[name].append(time.perf_counter() - started)
        if done.returncode != 0:
            sys.exit(f"{argv}: {done.stderr}")
print(json.dumps({name: statistics.median(v) * 1000 for name, v in samples.items()}))
"""


def pre_start_check_ms(user: str, rounds: int) -> dict[str, float]:
    in_slice = ["systemd-run", "--quiet", "--scope", f"--slice=dtenant-{user}.slice"]
    medians = json.loads(run([*in_slice, "python3", "-c", CHECK_TIMING, str(rounds), user]))
    return {"check_tenant_ms": round(medians["server"] - medians["true"], 2),
            "check_tenant_direct_ms": round(medians["direct"] - medians["true"], 2)}  # fmt: skip


def active_daemons() -> set[str]:
    out = run(
        ["systemctl", "list-units", "--state=active", "--no-legend", "--plain", "docker@*.service"]
    )
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def add_ghosts(total: int) -> int:
    """Registry rows, networkd files, bridges and data-root directories (what the
    pre-start check and verify compare) until `total` tenants are registered."""
    network = load().network
    with Registry() as registry:
        have = len(registry.all())
        for index in range(have, total):
            allocation = registry.allocate(f"ghost{index}", 300000 + index, network, [])
            tenant = allocation.tenant
            tenant.netdev_file.write_text(render.netdev(allocation))
            tenant.network_file.write_text(render.network(allocation))
            tenant.data_root.mkdir(parents=True, exist_ok=True)
    run(["networkctl", "reload"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        bridges = run(["ip", "-o", "link", "show", "type", "bridge"]).count("dtenant")
        if bridges >= total:
            return bridges
        time.sleep(1)
    return bridges


def busy_fraction(seconds: float = 1.0) -> float:
    def sample() -> tuple[int, int]:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total, idle = sample()
    time.sleep(seconds)
    total2, idle2 = sample()
    return 1 - (idle2 - idle) / max(total2 - total, 1)


def settle() -> bool:
    """Until networkd has configured every link and the machine is quiet again: figures
    taken while networkd and udev digest a thousand new bridges would measure them."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        links = run(["networkctl", "list", "--no-legend"])
        if "configuring" not in links and "pending" not in links and busy_fraction() < 0.25:
            return True
    return False


def measure(size: int, rounds: int) -> dict[str, float]:
    hook_env = {"PAM_TYPE": "open_session", "PAM_USER": "active0"}
    before = active_daemons()
    figures: dict[str, float] = {
        "tenants": size,
        "bridges": add_ghosts(size),
        "settled": settle(),
    }
    # Sub-millisecond: many runs, turn about with /bin/true for the machine's own state.
    figures["hook_hot_ms"], figures["exec_true_ms"] = interleaved_ms(
        ["/usr/lib/dtenant/pam-hook"], ["/bin/true"], rounds * 100, hook_env
    )
    figures |= {
        "reap_pass_ms": timed_ms(["dtenant", "reap", "--dry-run"], rounds),
        "status_ms": timed_ms(["dtenant", "status"], rounds),
        "verify_ms": timed_ms(["dtenant", "verify"], 1),
        "firewall_sync_ms": timed_ms(["dtenant", "firewall", "sync"], rounds),
    }
    figures |= pre_start_check_ms(STOPPED, rounds * 4)
    figures["daemons_started_by_reap"] = len(active_daemons() - before)
    return figures


def concurrent_first_logins(count: int, port: int, prefix: str) -> dict[str, float]:
    """`count` new users log in over SSH at once on `port`; how many got a socket."""
    users = [f"{prefix}{i}" for i in range(count)]
    key = "/root/.ssh/bench-crowd"
    if not os.path.exists(key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    for user in users:
        run(["useradd", "--create-home", user])
        ssh_dir = Path(f"/home/{user}/.ssh")
        ssh_dir.mkdir(mode=0o700)
        (ssh_dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
        run(["chown", "-R", f"{user}:{user}", str(ssh_dir)])

    def login(user: str) -> bool:
        argv = ["ssh", "-p", str(port), "-i", key, "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", f"{user}@127.0.0.1",
                f"test -S /run/docker-{user}.sock"]  # fmt: skip
        return subprocess.run(argv, capture_output=True, check=False).returncode == 0

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(login, users))
    return {"ok": sum(results), "total_s": round(time.perf_counter() - started, 2)}


def main() -> None:
    sizes = [int(s) for s in sys.argv[1].split(",")]
    active, rounds = int(sys.argv[2]), int(sys.argv[3])
    for index in range(active):
        user = f"active{index}"
        run(["useradd", "--create-home", user])
        run(["dtenant", "provision", user])
        uid = run(["id", "-u", user]).strip()
        run(
            [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={uid}",
                "--init-groups",
                "env",
                f"DOCKER_HOST=unix:///run/docker-{user}.sock",
                "docker",
                "ps",
            ]
        )
    run(["useradd", "--create-home", STOPPED])
    run(["dtenant", "provision", STOPPED])
    run(["systemctl", "start", f"docker@{STOPPED}.service"])  # its databases made
    run(["systemctl", "stop", f"docker@{STOPPED}.service"])
    series = [measure(size, rounds) for size in sizes]
    with_dtenant = concurrent_first_logins(50, 22, "crowd")
    # The same on the second sshd, whose PAM stack lacks dtenant (inlab_login.py made it):
    # what fifty first logins cost without provisioning.
    without = concurrent_first_logins(50, 2222, "plain")
    print(
        json.dumps(
            {
                "series": series,
                "concurrent_logins": 50,
                "concurrent_logins_ok": with_dtenant["ok"],
                "concurrent_logins_total_s": with_dtenant["total_s"],
                "concurrent_logins_without_dtenant_s": without["total_s"],
            }
        )
    )


if __name__ == "__main__":
    main()
