"""Runs inside a lab with dtenant installed (as root): login and daemon figures, as JSON.

- the PAM hook through real PAM (python-pam): open_session of a service holding only
  the hook, against the same service without it, against a bare interpreter; hot path
  (provisioned user) and cold path (a new user each time: provisioning);
- an SSH login as a whole with dtenant against without it: a second sshd whose PAM stack
  is the same minus dtenant's lines, both measured in alternation;
- the first docker command (socket activation starts the daemon) and warm commands,
  against the host's own always-on docker.service;
- memory: an idle tenant, an active tenant (its dockerd with its own containerd, and its
  authorization plugin), and one always-on dockerd with its own containerd per user as
  in the original write-up; each the median of 5 RSS samples, 2 s apart (median_memory).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.append("/usr/lib/python3/dist-packages")

import pam

HOOK_SERVICE = "dtenant-bench-hook"
NONE_SERVICE = "dtenant-bench-none"
PAM_BASE = "auth required pam_permit.so\naccount required pam_permit.so\n"


def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]
    except subprocess.CalledProcessError as failed:
        raise SystemExit(f"{argv}: exit {failed.returncode}: {failed.stderr}") from None


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 2)


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def add_user(name: str) -> None:
    if subprocess.run(["id", name], capture_output=True, check=False).returncode != 0:
        run(["useradd", "--create-home", name])


def open_session(user: str, service: str) -> float:
    handle = pam.PamAuthenticator()  # type: ignore[attr-defined]  # re-exported, untyped
    if not handle.authenticate(user, "", service=service, call_end=False):
        raise SystemExit(f"PAM authentication for {user} via {service}: {handle.reason}")
    elapsed = timed(handle.open_session)
    handle.close_session()
    handle.end()
    return elapsed


def pam_figures(rounds: int, cold_rounds: int) -> dict[str, float]:
    line = "pam_exec.so quiet type=open_session /usr/lib/dtenant/pam-hook"
    Path(f"/etc/pam.d/{HOOK_SERVICE}").write_text(f"{PAM_BASE}session optional {line}\n")
    Path(f"/etc/pam.d/{NONE_SERVICE}").write_text(PAM_BASE + "session required pam_permit.so\n")
    add_user("benchhot")
    run(["dtenant", "provision", "benchhot"])
    bare, none, hook = [], [], []
    for _ in range(rounds):  # interleaved: every side sees the same machine
        bare.append(timed(lambda: run(["/usr/bin/python3", "-I", "-S", "-c", "pass"])))
        none.append(open_session("benchhot", NONE_SERVICE))
        hook.append(open_session("benchhot", HOOK_SERVICE))
    cold, started = [], 0
    for index in range(cold_rounds):
        user = f"benchcold{index}"
        add_user(user)
        cold.append(open_session(user, HOOK_SERVICE))
        state = subprocess.run(
            ["systemctl", "is-active", f"docker@{user}.service"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        started += state == "active"
    return {
        "bare_ms": median_ms(bare),
        "pam_without_hook_ms": median_ms(none),
        "pam_hot_ms": median_ms(hook),
        "hot_over_bare": round(statistics.median(hook) / statistics.median(bare), 2),
        "pam_cold_ms": median_ms(cold),
        "pam_cold_max_ms": round(max(cold) * 1000, 1),
        "daemons_started_by_cold_path": started,
    }


def second_sshd_without_dtenant() -> None:
    """sshd as `sshd-nodt` on port 2222: its PAM service is sshd's minus dtenant."""
    session = Path("/etc/pam.d/common-session").read_text().splitlines()
    kept = [
        line
        for line in session
        if "pam-hook" not in line and "pam_succeed_if" not in line and "dtenant/pam_env" not in line
    ]
    Path("/etc/pam.d/common-session-nodt").write_text("\n".join(kept) + "\n")
    sshd = (
        Path("/etc/pam.d/sshd")
        .read_text()
        .replace("@include common-session\n", "@include common-session-nodt\n")
    )
    Path("/etc/pam.d/sshd-nodt").write_text(sshd)
    shutil.copy2("/usr/sbin/sshd", "/usr/sbin/sshd-nodt")  # PAM service = program name
    run(["systemd-run", "--unit=sshd-nodt", "/usr/sbin/sshd-nodt", "-D", "-p", "2222"])
    time.sleep(0.5)


def ssh_argv(user: str, port: int, remote: str) -> list[str]:
    return [
        "ssh",
        "-p",
        str(port),
        "-i",
        f"/root/.ssh/bench-{user}",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        f"{user}@127.0.0.1",
        remote,
    ]


def authorize_key(user: str) -> None:
    key = f"/root/.ssh/bench-{user}"
    if not os.path.exists(key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    home = Path(f"/home/{user}/.ssh")
    home.mkdir(mode=0o700, exist_ok=True)
    shutil.copy(f"{key}.pub", home / "authorized_keys")
    run(["chown", "-R", f"{user}:{user}", str(home)])


def ssh_figures(rounds: int) -> dict[str, float]:
    """Pairs of logins, one with dtenant and one without, the order alternating: the
    overhead is the median of the pairs' differences, so the machine's drift cancels."""
    authorize_key("benchhot")
    second_sshd_without_dtenant()
    with_dt: list[float] = []
    without: list[float] = []
    for index in range(rounds * 4):
        sides = [(with_dt, 22), (without, 2222)]
        for samples, port in sides if index % 2 else reversed(sides):
            argv = ssh_argv("benchhot", port, "true")
            samples.append(timed(lambda argv=argv: run(argv)))  # type: ignore[misc]
    differences = [a - b for a, b in zip(with_dt, without, strict=True)]
    return {
        "ssh_login_with_ms": median_ms(with_dt),
        "ssh_login_without_ms": median_ms(without),
        "ssh_overhead_ms": median_ms(differences),
        "ssh_overhead_percent": round(
            statistics.median(differences) / statistics.median(without) * 100, 1
        ),
    }


def cli_as(uid: int, home: str, host: str) -> list[str]:
    """The docker CLI as uid, talking to host's socket. setpriv, not runuser or su: no PAM
    session (and no login hook) in the measurement."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--init-groups", "env",
            f"HOME={home}", f"DOCKER_HOST=unix://{host}", "docker"]  # fmt: skip


SYSTEM_USER = "benchsys"  # the system daemon's user: in the docker group, as is usual


def docker_group_cli(host: str) -> list[str]:
    """The CLI as an ordinary user of the docker group: started as dtenant's is."""
    add_user(SYSTEM_USER)
    run(["usermod", "-a", "-G", "docker", SYSTEM_USER])
    uid = int(run(["id", "-u", SYSTEM_USER]).stdout)
    return cli_as(uid, f"/home/{SYSTEM_USER}", host)


def docker_figures(rounds: int) -> dict[str, float]:
    unit = "docker@benchhot.service"
    uid = int(run(["id", "-u", "benchhot"]).stdout)
    as_user = cli_as(uid, "/home/benchhot", "/run/docker-benchhot.sock")
    # The system daemon's user: an ordinary account in the docker group, started the same
    # way (setpriv --init-groups itself costs ~1.5 ms, so root would not be a fair side).
    as_system = docker_group_cli("/run/docker.sock")
    first = []
    for _ in range(max(3, rounds // 5)):
        run(["systemctl", "stop", unit])
        # docker@.service allows 3 starts a minute (crash loops); these are deliberate.
        run(["systemctl", "reset-failed", unit])
        first.append(timed(lambda: run([*as_user, "version"])))
    tenant, system = [], []
    for _ in range(rounds):
        tenant.append(timed(lambda: run([*as_user, "ps"])))
        system.append(timed(lambda: run([*as_system, "ps"])))
    return {
        "first_command_ms": median_ms(first),
        "first_command_max_ms": round(max(first) * 1000, 1),
        "warm_tenant_ms": median_ms(tenant),
        "warm_system_ms": median_ms(system),
        "warm_over_system_percent": round(
            (statistics.median(tenant) / statistics.median(system) - 1) * 100, 1
        ),
    }


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def main_pid(unit: str) -> int:
    return int(run(["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout)


def unit_pids(unit: str) -> list[int]:
    """Every process of a unit (a tenant's dockerd, its containerd and shims)."""
    group = run(["systemctl", "show", "-p", "ControlGroup", "--value", unit]).stdout.strip()
    for hierarchy in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        procs = Path(f"{hierarchy}{group}/cgroup.procs")
        if procs.exists():
            return [int(pid) for pid in procs.read_text().split()]
    return [main_pid(unit)]


# Memory is a median of MEMORY_SAMPLES samples, MEMORY_EVERY seconds apart, the same for
# every side and measure: a Go daemon's RSS moves by a few MiB from one moment to the
# next, and a single sample decided a target that a few MiB decide.
MEMORY_SAMPLES = 5
MEMORY_EVERY = 2.0


def median_memory(measures: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each measure's median of MEMORY_SAMPLES samples, the measures taken turn about."""
    taken: dict[str, list[float]] = {name: [] for name in measures}
    for index in range(MEMORY_SAMPLES):
        if index:
            time.sleep(MEMORY_EVERY)
        for name, measure in measures.items():
            taken[name].append(measure())
    return {name: round(statistics.median(values), 1) for name, values in taken.items()}


def memory_figures() -> dict[str, float]:
    add_user("benchidle")
    run(["dtenant", "provision", "benchidle"])
    idle = run(["systemctl", "show", "-p", "MainPID", "--value", "docker@benchidle.service"])
    uid = int(run(["id", "-u", "benchhot"]).stdout)
    run([*cli_as(uid, "/home/benchhot", "/run/docker-benchhot.sock"), "ps"])
    time.sleep(3)

    def dockerd() -> float:  # with its own containerd
        return rss_kib(unit_pids("docker@benchhot.service")) / 1024

    def plugin() -> float:
        return rss_kib([main_pid("dtenant-authz@benchhot.service")]) / 1024

    active = median_memory({"dockerd": dockerd, "plugin": plugin,
                            "tenant": lambda: dockerd() + plugin()})  # fmt: skip
    # The original write-up: one always-on dockerd per user, each with its own containerd.
    base = "/var/lib/bench-alwayson"
    run(["mkdir", "-p", f"{base}/containerd", f"{base}/docker", "/run/bench-alwayson"])
    run(
        [
            "systemd-run",
            "--unit=bench-containerd",
            "/usr/bin/containerd",
            "--address",
            "/run/bench-alwayson/containerd.sock",
            "--root",
            f"{base}/containerd",
            "--state",
            "/run/bench-alwayson/state",
        ]
    )
    time.sleep(1)
    run(
        [
            "systemd-run",
            "--unit=bench-dockerd",
            "--property=PrivateNetwork=yes",  # --bridge=none deletes the host's docker0
            "/usr/sbin/dockerd",
            "--containerd=/run/bench-alwayson/containerd.sock",
            f"--data-root={base}/docker",
            "--exec-root=/run/bench-alwayson/exec",
            "--pidfile=/run/bench-alwayson/docker.pid",
            "-H",
            "unix:///run/bench-alwayson/docker.sock",
            "--bridge=none",
            "--iptables=false",
        ]
    )
    for _ in range(100):
        if os.path.exists("/run/bench-alwayson/docker.sock"):
            break
        time.sleep(0.1)
    time.sleep(3)
    daemons = ("bench-dockerd.service", "bench-containerd.service")
    always_on = median_memory({"always_on": lambda: rss_kib([main_pid(u) for u in daemons]) / 1024})
    run(["systemctl", "stop", "bench-dockerd", "bench-containerd"])
    return {
        "idle_tenant_processes": 0 if idle.stdout.strip() == "0" else 1,
        "idle_tenant_rss_mib": 0.0,
        "active_tenant_rss_mib": active["tenant"],
        "active_dockerd_rss_mib": active["dockerd"],
        "active_plugin_rss_mib": active["plugin"],
        "always_on_per_user_rss_mib": always_on["always_on"],
        "memory_samples": MEMORY_SAMPLES,
    }


def main() -> None:
    rounds, cold_rounds = int(sys.argv[1]), int(sys.argv[2])
    figures: dict[str, float] = {}
    figures |= pam_figures(rounds, cold_rounds)
    figures |= ssh_figures(rounds)
    figures |= docker_figures(rounds)
    figures |= memory_figures()
    figures["rounds"] = rounds
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
