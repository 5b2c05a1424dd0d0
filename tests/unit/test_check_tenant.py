"""packaging/libexec/check-tenant.c, each daemon's pre-start check: when it asks the check
server, what it passes on, and when it checks in a process of its own.

Built here with stand-ins for the server's socket and the direct check. The probe of the
daemon's traffic filter is real: a network namespace of the test's own, where nftables
refuses the loopback as dtenant's table refuses it to a daemon (tests/sandbox shows the
installed program with the real server and table).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dtenant_session import checkserver, prestart

CHECKOUT = Path(__file__).resolve().parents[2]
SOURCE = CHECKOUT / "packaging" / "libexec" / "check-tenant.c"
# As render.REFUSE does for a daemon: connect() fails with "no route to host".
REFUSE_LOOPBACK = """
table inet probe {
    chain out { type filter hook output priority filter; policy accept;
                ip daddr 127.0.0.1 tcp dport 9 reject with icmpx type admin-prohibited; }
}
"""


class Build:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.program = directory / "check-tenant"
        self.server = directory / "check.sock"
        self.direct = directory / "direct"


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    compiler = shutil.which("cc")
    if compiler is None:
        pytest.skip("no C compiler (tests/setup-host installs gcc and libc6-dev)")
    made = Build(tmp_path_factory.mktemp("check"))
    # The stand-in for check-tenant-direct says what it got and exits 7.
    made.direct.write_text('#!/bin/sh\necho "direct $*" >&2\nenv >&2\nexit 7\n')
    made.direct.chmod(0o755)
    subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-static-pie",
                    f'-DSERVER="{made.server}"', f'-DDIRECT="{made.direct}"',
                    '-DHOST_NAMESPACE="/proc/self/ns/mnt"', "-DANSWER_SECONDS=1",
                    "-o", str(made.program), str(SOURCE)], check=True)  # fmt: skip
    return made


def _filtering_namespace() -> list[str]:
    """argv prefix: a network namespace whose loopback nftables refuses on port 9."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nft") is None:
        pytest.skip("needs root, unshare and nft for a network namespace of its own")
    return ["unshare", "--net", "sh", "-c",
            f"ip link set lo up && nft -f - <<'EOF'\n{REFUSE_LOOPBACK}\nEOF\n"
            'exec "$@"', "sh"]  # fmt: skip


class FakeServer:
    """A check server on the stand-in socket answering with `reply(request)`."""

    def __init__(self, path: Path, reply: Callable[[bytes], bytes | None]) -> None:
        self.requests: list[bytes] = []
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                request = checkserver.read_request(connection)
                self.requests.append(request)
                answer = self.reply(request)
                if answer is not None:
                    connection.sendall(answer)
                else:
                    threading.Event().wait(3)  # hangs past the client's time limit


@pytest.fixture
def serving(build: Build) -> Iterator[Callable[[Callable[[bytes], bytes | None]], FakeServer]]:
    servers: list[FakeServer] = []

    def start(reply: Callable[[bytes], bytes | None]) -> FakeServer:
        servers.append(FakeServer(build.server, reply))
        return servers[-1]

    yield start
    for server in servers:
        server.listener.close()
    build.server.unlink(missing_ok=True)


def _run(build: Build, *args: str, filtered: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = _filtering_namespace() if filtered else []
    # (LD_PRELOAD would reach the namespace's own tools: a daemon's ExecStartPre gets
    # systemd's environment, and this program is static anyway.)
    environment = {"PATH": os.environ["PATH"], "PYTHONPATH": "/home/eve", "HOME": "/home/eve",
                   "BASH_ENV": "/home/eve/x.sh", "DTENANT_DEBUG": "1"}  # fmt: skip
    return subprocess.run([*prefix, str(build.program), *args], capture_output=True,
                          text=True, env=environment, timeout=30, check=False)  # fmt: skip


def test_a_name_dtenant_does_not_handle_is_refused_before_anything(
    build: Build, serving: Callable[[Callable[[bytes], bytes | None]], FakeServer]
) -> None:
    server = serving(lambda _: b"0\n")
    for args in ([], ["alice", "bob"], ["../alice"], ["-alice"], [".alice"], ["a" * 33],
                 ["al ice"], ["alice\n"], [""]):  # fmt: skip
        result = _run(build, *args)
        assert (result.returncode, result.stderr) == (
            2,
            "usage: check-tenant USER (a user name dtenant handles)\n",
        ), args
    assert server.requests == []


def test_the_servers_answer_is_passed_on(
    build: Build, serving: Callable[[Callable[[bytes], bytes | None]], FakeServer]
) -> None:
    lines = "dtenant: refusing to start the daemon of alice: locked\ndtenant: and more\n"
    answers = {b"alice\n": f"1\n{lines}".encode(), b"bob\n": b"0\n"}
    server = serving(lambda request: answers[request])
    refused = _run(build, "alice")
    assert (refused.returncode, refused.stderr) == (1, lines)
    allowed = _run(build, "bob")
    assert (allowed.returncode, allowed.stderr) == (0, "")
    assert server.requests == [b"alice\n", b"bob\n"]


def test_a_daemon_whose_filter_does_not_hold_is_checked_in_a_process_of_its_own(
    build: Build, serving: Callable[[Callable[[bytes], bytes | None]], FakeServer]
) -> None:
    """The table must be loaded again from the daemon's cgroup: the server cannot."""
    server = serving(lambda _: b"0\n")
    result = _run(build, "alice", filtered=False)
    assert result.returncode == 7
    said = result.stderr.splitlines()
    assert said[0] == "direct alice"
    # Nothing of the caller's environment, but a fixed PATH and dtenant's debug switch;
    # in the host's mount namespace (setns starts it at the namespace's root).
    assert sorted(said[1:]) == ["DTENANT_DEBUG=1", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                                "PWD=/"]  # fmt: skip
    assert server.requests == []


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(lambda _: b"", id="closed without an answer"),
        pytest.param(lambda _: b"0", id="no status line"),
        pytest.param(lambda _: b"allowed\n", id="not a status"),
        pytest.param(lambda _: b"3\n", id="an unknown status"),
        pytest.param(lambda _: b"\0\n", id="a NUL for a status"),
        pytest.param(lambda _: b"0\n" + b"x" * 70_000, id="an answer too long"),
        pytest.param(lambda _: None, id="no answer in time"),
    ],
)
def test_no_whole_answer_means_the_check_runs_in_a_process_of_its_own(
    build: Build,
    serving: Callable[[Callable[[bytes], bytes | None]], FakeServer],
    reply: Callable[[bytes], bytes | None],
) -> None:
    server = serving(reply)
    result = _run(build, "alice")
    assert result.returncode == 7
    said = result.stderr.splitlines()
    fallback = f"dtenant: the check server ({build.server}) gave no answer: checking alice here"
    assert said[0] == fallback
    assert said[1] == "direct alice"
    assert server.requests == [b"alice\n"]


def test_no_server_at_all_means_the_check_runs_in_a_process_of_its_own(build: Build) -> None:
    result = _run(build, "alice")
    assert result.returncode == 7
    assert "gave no answer: checking alice here" in result.stderr.splitlines()[0]


def _no_nft(script: str) -> str | None:
    raise AssertionError(f"nft was not to be run: {script}")


def test_the_server_answers_root_alone_and_user_names_only() -> None:
    assert checkserver.answer(b"alice\n", os.getpid(), 1000, _no_nft) == (
        1, "dtenant: the check server answers root alone, not uid 1000\n")  # fmt: skip
    for request in (b"../alice\n", b"alice", b"al ice\n", b"\n", b"-x\n", b"\xff\n"):
        status, text = checkserver.answer(request, os.getpid(), 0, _no_nft)
        assert status == 2 and "is not a user name dtenant handles" in text, request


def test_a_request_is_read_up_to_its_newline_and_no_further() -> None:
    here, there = socket.socketpair()
    with here, there:
        there.sendall(b"alice\n")  # and the connection stays open
        assert checkserver.read_request(here) == b"alice\n"
        there.sendall(b"x" * 100)
        assert checkserver.read_request(here) == b"x" * checkserver.REQUEST_MAX


def test_a_server_that_fails_gives_no_answer_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The client then checks in a process of its own; the journal names the failure."""

    def broken(*_: object) -> tuple[int, str]:
        raise ValueError("a bug")

    monkeypatch.setattr(prestart, "verdict", broken)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "check.sock"))
    listener.listen(1)
    server = checkserver.CheckServer(listener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(tmp_path / "check.sock"))
            client.sendall(b"alice\n")
            client.settimeout(10)
            assert client.recv(100) == b""
    finally:
        server.shutdown()
        listener.close()
    assert "Traceback" not in capfd.readouterr().err
