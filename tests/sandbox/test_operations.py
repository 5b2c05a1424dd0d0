"""Operations for real: the reaper racing a user, users told why their daemon stopped,
`runuser -l`, metrics for monitoring, and a broken configuration that stops nothing
silently. Over SSH and as the users themselves, in a lab."""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import load_image

IMAGE = testimage.IMAGE
DROPIN = "/etc/dtenant/dtenant.toml.d/50-test-operations.toml"


def _state(lab: host.Lab, unit: str) -> str:
    return lab.run(["systemctl", "is-active", unit], check=False).stdout.strip()


@pytest.fixture(scope="module")
def racer(lab: host.Lab) -> str:
    lab.add_account("racer")
    load_image(lab, "racer")
    return "racer"


@pytest.fixture
def short_idle(lab: host.Lab) -> Iterator[None]:
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", DROPIN], input="[reap]\nidle_timeout = 1\n")
    yield
    lab.run(["rm", "-f", DROPIN])


def as_user_without_session(user: str, script: str) -> list[str]:
    """`script` run as user with DOCKER_HOST and no login session (a cron job, a CI
    runner): no logind session keeps the reaper away, so it really races the commands."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--",
            "/usr/bin/env", "-i", f"HOME=/home/{user}", "PATH=/usr/bin:/bin",
            f"DOCKER_HOST=unix:///run/docker-{user}.sock", "/bin/bash", "-c", script]  # fmt: skip


RACE_SECONDS = 60


def test_a_reap_loop_never_fails_a_users_commands(
    lab: host.Lab, racer: str, short_idle: None
) -> None:
    """For a minute, `dtenant reap racer` in a loop against racer's own loop of `docker run
    --rm`, with pauses of 0 to 2.5 s between commands: the daemon is stopped many times
    (pauses longer than idle_timeout), and commands start at every moment around a stop.
    Not one may fail."""
    reaps = (f"end=$((SECONDS+{RACE_SECONDS})); while [ $SECONDS -lt $end ]; do "
             f"dtenant reap {racer} --json | tr -d '\\n'; echo; "
             f"done > /tmp/reaps.json 2>&1")  # fmt: skip
    commands = (f"ok=0; failed=0; end=$((SECONDS+{RACE_SECONDS})); "
                f"while [ $SECONDS -lt $end ]; do "
                f"if docker run --rm {IMAGE} true >/dev/null 2>>/tmp/race-errors; "
                f"then ok=$((ok+1)); else failed=$((failed+1)); fi; "
                f"r=$((RANDOM % 250)); sleep $((r / 100)).$((r / 10 % 10))$((r % 10)); done; "
                f"echo $ok $failed")  # fmt: skip
    lab.run(["rm", "-f", "/tmp/race-errors", "/tmp/reaps.json"])
    user_loop = shlex.join(as_user_without_session(racer, commands))
    result = lab.run(["bash", "-c", f"({reaps}) & {user_loop}; wait"], timeout=RACE_SECONDS + 120)
    ok, failed = (int(n) for n in result.stdout.split()[-2:])
    errors = lab.run(["cat", "/tmp/race-errors"], check=False).stdout
    passes = lab.run(["cat", "/tmp/reaps.json"]).stdout.splitlines()
    decisions = [json.loads(line)[0] for line in passes if line.startswith("[")]
    stops = sum(1 for d in decisions if d["action"] == "stop" and d["done"])
    assert failed == 0, f"{failed} of {ok + failed} commands failed ({stops} stops):\n{errors}"
    assert ok >= 20, result.stdout
    assert stops >= 3, f"the reaper never raced the user ({len(decisions)} passes)"
