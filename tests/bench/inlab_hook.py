"""Runs inside a lab with dtenant installed: times the PAM hook. Prints JSON.

Hot path: the hook for an already provisioned user, next to a bare `python3 -I -S -c pass`
(the floor for any Python hook). Cold path: the hook for a new user each time, which
provisions everything but the daemon.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time

HOOK = "/usr/lib/dtenant/pam-hook"


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, check=True)
    return time.perf_counter() - started


def login_env(user: str) -> dict[str, str]:
    return {"PAM_TYPE": "open_session", "PAM_USER": user, "PAM_SERVICE": "sshd"}


def main() -> None:
    rounds, cold_rounds = int(sys.argv[1]), int(sys.argv[2])
    subprocess.run(["useradd", "--create-home", "benchhot"], check=True)
    subprocess.run(["dtenant", "provision", "benchhot"], check=True, capture_output=True)
    bare, hot = [], []
    for _ in range(rounds):  # interleaved: both sides see the same machine state
        bare.append(timed(["/usr/bin/python3", "-I", "-S", "-c", "pass"]))
        hot.append(timed([HOOK], login_env("benchhot")))
    cold, daemons_started = [], 0
    for index in range(cold_rounds):
        user = f"benchcold{index}"
        subprocess.run(["useradd", "--create-home", user], check=True)
        cold.append(timed([HOOK], login_env(user)))
        unit = f"docker@{user}.service"
        state = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True,
                               check=False).stdout.strip()  # fmt: skip
        daemons_started += state == "active"
    print(json.dumps({
        "bare_ms": statistics.median(bare) * 1000,
        "hot_ms": statistics.median(hot) * 1000,
        "cold_ms": statistics.median(cold) * 1000,
        "cold_max_ms": max(cold) * 1000,
        "rounds": rounds,
        "cold_rounds": cold_rounds,
        "daemons_started_by_cold_path": daemons_started,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
