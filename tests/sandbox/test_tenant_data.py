"""Root's tools on whatever a tenant stores: a tree deeper than Python's recursion limit,
a FIFO, symlink loops, a directory of a million entries; and requests of any size to the
explainer of a daemon that cannot start. Every tool completes, for every tenant."""

from __future__ import annotations

import json
import os
import shlex
import time

import pytest

from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import load_image

IMAGE = testimage.IMAGE
HOARDER = "hoarder"
DEPTH = 1100
# The million; DTENANT_TEST_WIDE=N for a quicker look.
WIDE = int(os.environ.get("DTENANT_TEST_WIDE", "1000000"))
# In the tenant's volume, as the tenant: the deep tree, FIFOs, loops, a link to /, hard
# links, and a directory of WIDE names (each a symlink to itself: the cheapest entry to
# make, ~3x faster than empty files, and a loop more).
MAKE = f"""
set -e
cd /v
mkdir deep && cd deep
i=0; while [ $i -lt {DEPTH} ]; do mkdir d; cd d; i=$((i+1)); done
echo bottom > file; mkfifo fifo-at-the-bottom; ln -s ../.. up
cd /v
mkfifo fifo
ln -s loop2 loop1; ln -s loop1 loop2; ln -s . self; ln -s / host-root
echo linked > one; ln one two; ln one three
mkdir wide && cd wide
seq 1 {WIDE} | xargs sh -c 'ln -s "$@" .' sh
ls -a | wc -l
"""


@pytest.fixture(scope="module")
def hoard(lab: host.Lab, tenants: tuple[str, ...]) -> str:
    """A tenant whose volume holds all of it; bob, an ordinary tenant beside it."""
    lab.add_account(HOARDER)
    load_image(lab, HOARDER)
    started = time.monotonic()
    made = lab.ssh(HOARDER, f"docker run --rm -v hoard:/v {IMAGE} sh -c {shlex.quote(MAKE)}",
                   timeout=900)  # fmt: skip
    print(f"made the hoard in {time.monotonic() - started:.1f} s: {made.stdout.strip()}")
    assert int(made.stdout.split()[-1]) == WIDE + 2  # and . and ..
    return HOARDER


def _run(lab: host.Lab, *argv: str, timeout: float = 600) -> str:
    """A root command that must complete cleanly (no traceback), its stdout."""
    started = time.monotonic()
    result = lab.run(["dtenant", *argv], timeout=timeout, check=False)
    print(f"dtenant {' '.join(argv)}: {time.monotonic() - started:.1f} s, exit {result.returncode}")
    assert "Traceback" not in result.stderr, result.stderr
    assert "Error" not in result.stderr, result.stderr
    return result.stdout


def test_reap_completes_for_every_tenant(lab: host.Lab, hoard: str) -> None:
    for _ in range(2):  # a second pass: nothing left over from the first stops it
        decisions = json.loads(_run(lab, "reap", "--json"))
        assert {hoard, "bob"} <= {d["user"] for d in decisions}


def test_status_shows_every_tenant_and_the_hoard_s_size(lab: host.Lab, hoard: str) -> None:
    rows = {r["user"]: r for r in json.loads(_run(lab, "status", "--json"))}
    assert {hoard, "bob"} <= set(rows)
    assert rows["bob"]["data_root_bytes"], rows["bob"]  # measured beside the hoard
    assert rows[hoard]["data_root_bytes"], rows[hoard]  # the hoard hides nothing
    print(f"{hoard}: {rows[hoard]['data_root_bytes']} bytes {rows[hoard]['data_root_note']}")
    table = _run(lab, "status")
    assert hoard in table and "bob" in table


def test_verify_checks_every_tenant(lab: host.Lab, hoard: str) -> None:
    report = json.loads(_run(lab, "verify", "--json"))
    assert {hoard, "bob"} <= set(report["checked"])
    assert [f for f in report["findings"] if f["check"] == "error"] == []


def test_remove_purge_completes(lab: host.Lab, hoard: str) -> None:
    _run(lab, "remove", hoard, "--purge", "--yes", timeout=900)
    assert lab.run(["test", "-e", f"/var/lib/dtenant/tenants/{hoard}"], check=False).returncode == 1
    assert hoard not in _run(lab, "status")
    assert lab.ssh("bob", "docker ps -q").returncode == 0
    assert lab.run(["test", "-x", "/usr/bin/dtenant"]).returncode == 0  # `host-root` not followed


EXPLAINED = "explained"
HUGE = """
import os, socket, sys
path = f"/run/docker-{os.environ['USER']}.sock"
declared, body = int(sys.argv[1]), int(sys.argv[2])
with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
    connection.connect(path)
    connection.sendall(f"POST /v1.41/containers/create HTTP/1.1\\r\\nHost: docker\\r\\n"
                       f"Content-Length: {declared}\\r\\n\\r\\n".encode())
    chunk = b"x" * (1 << 20)
    try:
        for _ in range(body >> 20):
            connection.sendall(chunk)
    except OSError as exc:
        print("sending stopped:", exc.strerror)
    reply = b""
    try:
        while data := connection.recv(65536):
            reply += data
    except OSError:
        pass
print(reply.split(b"\\r\\n", 1)[0].decode())
"""


def _explainer(lab: host.Lab, what: str) -> str:
    unit = f"dtenant-daemon-failed@{EXPLAINED}.service"
    return lab.run(["systemctl", "show", "-P", what, unit]).stdout.strip()


def _peak(lab: host.Lab) -> int:
    """The explainer's memory high-water mark: cgroup v2's memory.peak, or v1's."""
    group = _explainer(lab, "ControlGroup")
    for path in (f"/sys/fs/cgroup{group}/memory.peak",
                 f"/sys/fs/cgroup/unified{group}/memory.peak",
                 f"/sys/fs/cgroup/memory{group}/memory.max_usage_in_bytes"):  # fmt: skip
        found = lab.run(["cat", path], check=False)
        if found.returncode == 0:
            return int(found.stdout)
    raise AssertionError(f"no memory high-water mark for {group}")


def test_the_explainer_reads_little_and_survives_any_request(lab: host.Lab) -> None:
    lab.add_account(EXPLAINED)
    lab.ssh(EXPLAINED, "true")
    lab.run(["systemctl", "stop", f"docker@{EXPLAINED}.service"])
    lab.run(["tee", f"/var/lib/dtenant/tenants/{EXPLAINED}/daemon.json"],
            input='{"bridge": "none", "not-an-option": true}')  # fmt: skip
    said = ""
    deadline = time.monotonic() + 30
    while "your Docker daemon cannot start" not in said and time.monotonic() < deadline:
        said = lab.ssh(EXPLAINED, "docker ps", check=False).stderr
        time.sleep(1)
    assert "your Docker daemon cannot start" in said
    pid = _explainer(lab, "MainPID")
    before = int(_explainer(lab, "MemoryCurrent"))
    script = shlex.quote(HUGE)
    for declared, body in ((50 << 20, 50 << 20), (10**12, 50 << 20)):
        sent = lab.ssh(EXPLAINED, f"python3 -c {script} {declared} {body}", timeout=120)
        print(f"Content-Length {declared}, {body} bytes sent: {sent.stdout.strip()}")
        assert "500 Internal Server Error" in sent.stdout
        after = int(_explainer(lab, "MemoryCurrent"))
        peak = _peak(lab)
        print(f"explainer memory: {before >> 10} KiB before, {after >> 10} KiB after, "
              f"peak {peak >> 10} KiB")  # fmt: skip
        assert after < before + (8 << 20)
        assert peak < before + (16 << 20)  # never held the body, not even for a moment
        assert _explainer(lab, "MainPID") == pid  # the same process: it survived
    assert _explainer(lab, "Slice") == f"dtenant-{EXPLAINED}.slice"  # the tenant's limits
    assert _explainer(lab, "MemoryMax") == str(64 << 20)
    again = lab.ssh(EXPLAINED, "docker ps", check=False).stderr
    assert "your Docker daemon cannot start" in again
    lab.run(["dtenant", "provision", EXPLAINED])  # the administrator puts it right
    assert lab.ssh(EXPLAINED, "docker ps -q").returncode == 0
