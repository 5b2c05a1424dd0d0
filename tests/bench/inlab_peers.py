"""Runs inside a lab with dtenant installed (as root): dtenant beside its peers, as JSON.

Sides, all in this lab and measured turn about in every round:
- dtenant: a tenant's daemon through its authorization plugin;
- the host's system `docker.service` (no plugin);
- the protocol's floor: a plain dockerd with a no-op authorization plugin (floors.py);
- the same plain dockerd without any plugin, and behind a pass-through proxy (floors.py):
  the floor of a filtering proxy, the design issue 17 asks to evaluate;
- Rootless Docker and Podman rootless (peers.py), when they can run here; a peer that
  cannot is reported with the reason.

Per side: 200 raw API calls on one kept-alive connection (`containers/json`, image
inspect), a warm `ps` and `run --rm IMAGE true` through the side's own CLI, the first
command after the daemon stopped, and memory with the daemon running and no container
(the median of 5 RSS samples, 2 s apart, taken of every side turn about). Medians and p90s.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2]))

from tests import testimage
from tests.bench import peers
from tests.bench.inlab_login import (
    MEMORY_SAMPLES,
    add_user,
    cli_as,
    docker_group_cli,
    median_memory,
    rss_kib,
    run,
    timed,
    unit_pids,
)

FLOORS = str(Path(__file__).with_name("floors.py"))
CALLS = 200
TENANT = "benchpeer"
FLOOR_TENANT = "benchfloor"


@dataclass
class Side:
    name: str
    socket: str
    cli: list[str]  # argv prefix ending in the CLI program
    cold: Callable[[], float] | None = None  # the first command after a stop, seconds
    memory: Callable[[], float] | None = None  # MiB, daemon running, no container
    runs_containers: bool = True
    samples: dict[str, list[float]] = field(default_factory=dict)

    def record(self, measure: str, seconds: float) -> None:
        self.samples.setdefault(measure, []).append(seconds)


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        connection = socket.socket(socket.AF_UNIX)
        connection.connect(self.unix_path)
        self.sock = connection


def raw_calls(socket_path: str, uri: str, count: int = CALLS) -> float:
    """Seconds for count GETs on one kept-alive connection, as an SDK script makes them."""
    connection = UnixConnection(socket_path)
    started = time.perf_counter()
    for _ in range(count):
        connection.request("GET", uri)
        reply = connection.getresponse()
        reply.read()
        if reply.status != 200:
            raise SystemExit(f"{socket_path} GET {uri}: HTTP {reply.status}")
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed


def wait_for(socket_path: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if peers.api_get(socket_path, "/_ping", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"no daemon answers on {socket_path}")


def units_mib(*units: str) -> float:
    return round(rss_kib([pid for unit in units for pid in unit_pids(unit)]) / 1024, 1)


def dtenant_side(user: str = TENANT, name: str = "dtenant") -> Side:
    add_user(user)
    run(["dtenant", "provision", user])
    uid = int(run(["id", "-u", user]).stdout)
    socket_path = f"/run/docker-{user}.sock"
    cli = cli_as(uid, f"/home/{user}", socket_path)
    unit, plugin = f"docker@{user}.service", f"dtenant-authz@{user}.service"

    def cold() -> float:
        run(["systemctl", "stop", unit, plugin])
        run(["systemctl", "reset-failed", unit])  # deliberate stops, not a crash loop
        return timed(lambda: run([*cli, "version"]))

    run([*cli, "version"])
    return Side(name, socket_path, cli, cold, lambda: units_mib(unit, plugin))


def tenant_floor_side() -> Side:
    """The same tenant daemon (unit, configuration, confinement) with the no-op plugin in
    place of dtenant's: the protocol's floor for exactly this daemon."""
    dropin = Path(f"/run/systemd/system/dtenant-authz@{FLOOR_TENANT}.service.d")
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "bench-floor.conf").write_text(
        f"[Service]\nExecStart=\nExecStart=/usr/bin/python3 {FLOORS} plugin-fd\n"
    )
    run(["systemctl", "daemon-reload"])
    side = dtenant_side(FLOOR_TENANT, "floor: dtenant daemon, no-op plugin")
    side.cold = side.memory = None
    return side


def system_side() -> Side:
    cli = docker_group_cli("/run/docker.sock")

    def cold() -> float:
        run(["systemctl", "stop", "docker.service"])  # docker.socket starts it again
        run(["systemctl", "reset-failed", "docker.service"])  # it allows 3 starts a minute
        return timed(lambda: run([*cli, "version"]))

    run(["systemctl", "start", "docker.socket", "docker.service"])
    return Side("system docker.service", "/run/docker.sock", cli, cold,
                lambda: units_mib("docker.service", "containerd.service"))  # fmt: skip


def plain_dockerd(name: str, *flags: str) -> str:
    """A plain dockerd of the host's binary, with its own data; its socket."""
    base = f"/run/bench-{name}"
    run(["mkdir", "-p", f"/var/lib/bench-{name}", base])
    # Its own network namespace: a dockerd with --bridge=none deletes the host's docker0.
    run(["systemd-run", f"--unit=bench-{name}", "--property=PrivateNetwork=yes",
         "/usr/sbin/dockerd",
         f"--data-root=/var/lib/bench-{name}", f"--exec-root={base}/exec",
         f"--pidfile={base}/docker.pid", "-H", f"unix://{base}/docker.sock",
         "--bridge=none", "--iptables=false", *flags])  # fmt: skip
    wait_for(f"{base}/docker.sock")
    return f"{base}/docker.sock"


def floor_sides() -> list[Side]:
    plugin = "/run/docker/plugins/bench-noop.sock"
    run(["systemd-run", "--unit=bench-noop-plugin", "/usr/bin/python3", FLOORS, "plugin", plugin])
    time.sleep(0.3)
    floor = plain_dockerd("floor", "--authorization-plugin=bench-noop")
    bare = plain_dockerd("noplugin")
    proxy = "/run/bench-proxy.sock"
    run(["systemd-run", "--unit=bench-proxy", "/usr/bin/python3", FLOORS, "proxy", proxy, bare])
    wait_for(proxy)

    run(["chgrp", "docker", proxy])
    return [
        tenant_floor_side(),
        Side("plain dockerd, no-op plugin", floor, docker_group_cli(floor), runs_containers=False),
        Side("plain dockerd, no plugin", bare, docker_group_cli(bare), runs_containers=False),
        Side(
            "plain dockerd, pass-through proxy",
            proxy,
            docker_group_cli(proxy),
            runs_containers=False,
        ),
    ]


Start = Callable[[str], peers.RootlessPeer | str]


def restarted(start: Start, user: str, units: list[str]) -> Callable[[], float]:
    """The first command after a rootless peer stopped: its start counts (no socket
    activation there)."""

    def cold() -> float:
        for unit in units:
            subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
        started = time.perf_counter()
        again = start(user)
        if isinstance(again, str):
            raise SystemExit(f"{user}: {again}")
        run([*again.cli, "version"])
        return time.perf_counter() - started

    return cold


def rootless_sides(unavailable: dict[str, str]) -> list[Side]:
    sides = []
    starts: list[tuple[str, Start, str]] = [
        ("rootless docker", peers.start_rootless_docker, "peerdocker"),
        ("podman rootless", peers.start_podman, "peerpodman"),
    ]
    for label, start, user in starts:
        peer = start(user)
        if isinstance(peer, str):
            unavailable[label] = peer
            continue
        units = list(peer.units)
        sides.append(Side(peer.name, peer.socket, peer.cli, restarted(start, user, units),
                          lambda units=units: units_mib(*units)))  # type: ignore[misc]  # fmt: skip
    return sides


def import_images(sides: list[Side]) -> None:
    image = testimage.build()
    for side in sides:
        argv = [*side.cli[:-1], *testimage.import_argv(side.cli[-1])]
        subprocess.run(argv, input=image, capture_output=True, check=True, timeout=300)


def one_round(sides: list[Side]) -> None:
    inspect = f"/images/{testimage.IMAGE}/json"
    for side in sides:
        side.record("api_containers", raw_calls(side.socket, "/containers/json"))
        side.record("api_inspect", raw_calls(side.socket, inspect))
        side.record("warm_ps", timed(lambda side=side: run([*side.cli, "ps"])))  # type: ignore[misc]
        if side.runs_containers:
            argv = [*side.cli, "run", "--rm", testimage.IMAGE, "true"]
            side.record("run_rm", timed(lambda argv=argv: run(argv)))  # type: ignore[misc]


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]
    return {"median_ms": round(statistics.median(ordered) * 1000, 1),
            "p90_ms": round(p90 * 1000, 1)}  # fmt: skip


def main() -> None:
    rounds, cold_rounds, packages = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    unavailable: dict[str, str] = {}
    problem = peers.install_packages(packages) if packages != "-" else "packages not fetched"
    sides = [dtenant_side(), system_side(), *floor_sides()]
    if problem is None:
        sides += rootless_sides(unavailable)
    else:
        unavailable |= {"rootless docker": problem, "podman rootless": problem}
    import_images(sides)
    one_round(sides)  # warm-up: caches, first connections
    for side in sides:
        side.samples.clear()
    for _ in range(rounds):
        one_round(sides)
    memory = median_memory({side.name: side.memory for side in sides if side.memory is not None})
    for _ in range(cold_rounds):
        for side in sides:
            if side.cold is not None:
                side.record("cold", side.cold())
    figures = {
        side.name: {measure: summary(values) for measure, values in side.samples.items()}
        for side in sides
    }
    print(json.dumps({"sides": figures, "memory_mib": memory, "unavailable": unavailable,
                      "rounds": rounds, "calls": CALLS,
                      "memory_samples": MEMORY_SAMPLES}))  # fmt: skip


if __name__ == "__main__":
    main()
