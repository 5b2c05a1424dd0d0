"""The policy fails closed, and a tenant's cost stays with the tenant (issue 12): raw API
requests the docker CLI would never send, floods of requests and of containers, as the
tenant over SSH."""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import RAWAPI, policy_in_force

IMAGE = testimage.IMAGE
DENIED = "authorization denied by plugin dtenant-alice: dtenant:"
CAP_DROPIN = "/etc/dtenant/dtenant.toml.d/60-test-cap.toml"


@pytest.fixture(scope="module")
def alice(lab: host.Lab, tenants: tuple[str, ...], rawapi: str) -> str:
    return "alice"


def _raw(lab: host.Lab, case: str) -> tuple[str, str]:
    reply = lab.ssh("alice", f"python3 {RAWAPI} {shlex.quote(case)}").stdout
    status, _, body = reply.partition("\n")
    return status, body


@pytest.mark.parametrize(
    "case",
    ["GET:/v1.41/swarm/unlockkey:none", "GET:/v1.41/containers/x/checkpoints:none",
     "GET:/v1.41/plugins/privileges:none"],
)  # fmt: skip
def test_endpoints_not_on_the_allow_list_are_denied(lab: host.Lab, alice: str, case: str) -> None:
    status, body = _raw(lab, case)
    assert " 403 " in status, (status, body)
    assert DENIED in body


@pytest.mark.parametrize(
    "case",
    ["POST:/v1.41/networks/bridge/connect:big", "POST:/v1.41/containers/x/kill:big",
     "POST:/v1.41/containers/x/start:big", "POST:/v1.41/exec/x/start:big",
     "DELETE:/v1.41/containers/x:big", "text-plain"],
)  # fmt: skip
def test_a_body_hidden_from_the_plugin_is_denied_everywhere(
    lab: host.Lab, alice: str, case: str
) -> None:
    status, body = _raw(lab, case)
    assert " 403 " in status, (status, body)
    assert DENIED in body and "body the plugin can" in body


def test_a_body_the_plugin_cannot_parse_is_a_clean_denial(lab: host.Lab, alice: str) -> None:
    since = lab.run(["date", "+%Y-%m-%d %H:%M:%S"]).stdout.strip()
    status, body = _raw(lab, "deep")
    assert " 403 " in status, (status, body)
    assert "nested too deeply" in body
    journal = lab.run(["journalctl", "-q", "--no-pager", "-u", "dtenant-authz@alice.service",
                       "--since", since]).stdout  # fmt: skip
    assert "Traceback" not in journal and "RecursionError" not in journal, journal


def test_an_oom_score_below_zero_is_denied(lab: host.Lab, alice: str) -> None:
    result = lab.ssh("alice", f"docker run --rm --oom-score-adj=-500 {IMAGE} true", check=False)
    assert result.returncode != 0 and DENIED in result.stderr, result.stderr
    assert "--oom-score-adj -500" in result.stderr


@pytest.fixture
def container_cap(lab: host.Lab) -> Iterator[int]:
    lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
    lab.run(["tee", CAP_DROPIN], input="[policy]\nmax_containers = 4\n")
    changed = time.monotonic()
    lab.ssh("alice", "docker container prune -f >/dev/null")
    policy_in_force(changed)
    yield 4
    lab.run(["rm", "-f", CAP_DROPIN])
    policy_in_force(time.monotonic())
    lab.ssh("alice", "docker rm -f $(docker ps -aq) >/dev/null 2>&1", check=False)


def test_a_container_flood_stops_at_the_cap_and_stays_in_the_slice(
    lab: host.Lab, alice: str, container_cap: int
) -> None:
    """Twelve concurrent `docker run -d`: no more than the cap (and the few the plugin
    let through at the same moment) exist; every shim runs in alice's slice; bob's
    `docker run` works meanwhile."""
    flood = " & ".join([f"docker run -d {IMAGE} sleep 300 >/dev/null 2>>/tmp/flood.err"] * 12)
    lab.ssh("alice", f"rm -f /tmp/flood.err; {flood} & wait", check=False, timeout=180)
    assert lab.ssh("bob", f"docker run --rm {IMAGE} echo ok").stdout.strip() == "ok"
    count = int(lab.ssh("alice", "docker ps -aq | wc -l").stdout)
    errors = lab.ssh("alice", "cat /tmp/flood.err").stdout
    assert container_cap <= count < 12, errors
    assert "policy.max_containers = 4" in errors
    denied = lab.ssh("alice", f"docker run -d {IMAGE} true", check=False)
    assert denied.returncode != 0 and "policy.max_containers = 4" in denied.stderr
    shims = lab.run(["pgrep", "-f", "containerd-shim"]).stdout.split()
    cgroups = [lab.run(["cat", f"/proc/{pid}/cgroup"]).stdout for pid in shims]
    in_alice = [cgroup for cgroup in cgroups if "dtenant-alice.slice" in cgroup]
    assert all("/dtenant.slice/dtenant-" in cgroup for cgroup in cgroups), cgroups
    assert len(in_alice) >= container_cap


FLOOD = """
import json, os, socket, sys, threading
path = f"/run/docker-{os.environ['USER']}.sock"
pad = "x" * 900_000  # under 1 MiB: the plugin sees and parses every body
body = json.dumps({"Image": "dtenant/busybox", "Labels": {"pad": pad},
                   "HostConfig": {"Privileged": True}}).encode()
head = ("POST /v1.41/containers/create HTTP/1.1\\r\\nHost: d\\r\\nContent-Type: "
        f"application/json\\r\\nContent-Length: {len(body)}\\r\\nConnection: close\\r\\n\\r\\n")
codes = []
def one():
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(120)
            s.connect(path)
            s.sendall(head.encode() + body)
            codes.append(s.recv(64).split(b" ")[1].decode())
    except OSError as exc:
        codes.append(type(exc).__name__)
threads = [threading.Thread(target=one) for _ in range(int(sys.argv[1]))]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(sorted(set(codes))))
"""


def test_a_request_flood_stays_in_the_tenants_slice(lab: host.Lab, alice: str) -> None:
    """300 concurrent 900 KB requests, each denied: the plugin runs in alice's slice, its
    memory stays under its own limit, every request is answered (denied), and bob's
    `docker run` works meanwhile."""
    unit = "dtenant-authz@alice.service"
    show = ["systemctl", "show", "-p", "Slice,MemoryMax,ControlGroup", "--value", unit]
    slice_, memory_max, cgroup = lab.run(show).stdout.split("\n")[:3]
    assert slice_ == "dtenant-alice.slice"
    lab.ssh("alice", "cat > ~/flood.py", input=FLOOD)
    lab.ssh("alice", "setsid python3 ~/flood.py 300 >~/flood.out 2>&1 </dev/null & sleep 2")
    assert lab.ssh("bob", f"docker run --rm {IMAGE} echo ok").stdout.strip() == "ok"
    lab.run(["sh", "-c", "while pgrep -u alice -f flood.py >/dev/null; do sleep 1; done"],
            timeout=300)  # fmt: skip
    assert json.loads(lab.ssh("alice", "cat ~/flood.out").stdout) == ["403"]
    peak = lab.run(["cat", f"/sys/fs/cgroup{cgroup}/memory.peak"], check=False).stdout.strip()
    if peak:
        assert int(peak) <= int(memory_max), peak
    assert lab.ssh("alice", "docker ps -q").returncode == 0


def test_a_builds_steps_run_in_the_tenants_slice(lab: host.Lab, alice: str) -> None:
    lab.ssh("alice", "mkdir -p ~/slow && printf 'FROM %s\\nRUN sleep 30\\n' " f"{IMAGE}"
            " > ~/slow/Dockerfile")  # fmt: skip
    lab.ssh("alice", "setsid sh -c 'DOCKER_BUILDKIT=0 docker build -q ~/slow' "
            ">/dev/null 2>&1 </dev/null &")  # fmt: skip
    try:
        found = lab.run(["sh", "-c", "for i in $(seq 60); do p=$(pgrep -n -f "
                         "'^sleep 30$') && { cat /proc/$p/cgroup; exit 0; }; sleep 0.5; done; "
                         "exit 1"], timeout=60)  # fmt: skip
        assert "/dtenant.slice/dtenant-alice.slice/" in found.stdout, found.stdout
    finally:
        lab.run(["pkill", "-f", "^sleep 30$"], check=False)
