"""The plugin server speaks Docker's plugin protocol over keep-alive HTTP/1.1."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtenant_session import activity, authz, paths


def _policy(request: dict[str, Any]) -> tuple[bool, str]:
    allowed = "privileged" not in json.dumps(request)
    return allowed, "" if allowed else "dtenant: no"


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setattr(activity, "touch", lambda user: None)
    path = str(tmp_path / "plugin.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen()
    server = authz.PluginServer(listener, "alice", _policy)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield path
    server.shutdown()
    thread.join()
    listener.close()


def _call(
    connection: socket.socket, path: str, body: bytes, close: bool = False
) -> tuple[str, Any]:
    extra = "Connection: close\r\n" if close else ""
    connection.sendall(f"POST {path} HTTP/1.1\r\nHost: plugin\r\nContent-Length: {len(body)}\r\n"
                       f"{extra}\r\n".encode() + body)  # fmt: skip
    reader = connection.makefile("rb")
    status = reader.readline().decode()
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return status, json.loads(reader.read(length))


def test_protocol_over_one_kept_alive_connection(plugin: str) -> None:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(plugin)
        assert _call(connection, "/Plugin.Activate", b"") == (
            "HTTP/1.1 200 OK\r\n", {"Implements": ["authz"]})  # fmt: skip
        allowed = json.dumps({"RequestMethod": "GET", "RequestUri": "/_ping"}).encode()
        assert _call(connection, "/AuthZPlugin.AuthZReq", allowed)[1] == {"Allow": True, "Msg": ""}
        denied = json.dumps({"RequestUri": "/privileged"}).encode()
        assert _call(connection, "/AuthZPlugin.AuthZReq", denied)[1]["Allow"] is False
        assert _call(connection, "/AuthZPlugin.AuthZRes", b"{}")[1] == {"Allow": True}
        _, reply = _call(connection, "/AuthZPlugin.AuthZReq", b"not json", close=True)
        assert reply == {"Allow": False, "Msg": "dtenant: malformed authorization request"}


def test_unknown_framing_is_refused(plugin: str) -> None:
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(plugin)
        connection.sendall(b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nTransfer-Encoding: chunked"
                           b"\r\n\r\n0\r\n\r\n")  # fmt: skip
        assert connection.recv(100).startswith(b"HTTP/1.1 400")


def _crashing(request: dict[str, Any]) -> tuple[bool, str]:
    if request.get("RequestUri") == "/crash":
        raise ValueError("a case the policy did not foresee")
    return True, ""


def test_a_policy_failure_is_a_denial_and_one_journal_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dtenant_session import log

    lines: list[str] = []
    monkeypatch.setattr(activity, "touch", lambda user: None)
    monkeypatch.setattr(log, "log", lambda message, **_: lines.append(message))
    server = authz.PluginServer(socket.socket(socket.AF_UNIX), "alice", _crashing)
    reply = server.authorize(json.dumps({"RequestMethod": "POST", "RequestUri": "/crash"}).encode())
    assert reply["Allow"] is False and "could not be checked (ValueError)" in reply["Msg"]
    assert lines == ["denied POST /crash: the policy failed (ValueError: a case the policy did "
                     "not foresee)"]  # fmt: skip
    deep = b'{"RequestUri": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert server.authorize(deep)["Allow"] is False
    server.server_close()


def test_large_requests_are_checked_a_few_at_a_time(plugin: str) -> None:
    """More large requests at once than LARGE_AT_ONCE all get their answer (they wait,
    they are not refused), and a small one is answered meanwhile."""
    body = json.dumps({"RequestUri": "/x", "RequestBody": "A" * (authz.LARGE_REQUEST + 1)})
    replies: list[Any] = []

    def one() -> None:
        with socket.socket(socket.AF_UNIX) as connection:
            connection.connect(plugin)
            replies.append(_call(connection, "/AuthZPlugin.AuthZReq", body.encode())[1])

    threads = [threading.Thread(target=one) for _ in range(3 * authz.LARGE_AT_ONCE)]
    for thread in threads:
        thread.start()
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(plugin)
        small = json.dumps({"RequestUri": "/_ping"}).encode()
        assert _call(connection, "/AuthZPlugin.AuthZReq", small)[1]["Allow"] is True
    for thread in threads:
        thread.join()
    assert replies == [{"Allow": True, "Msg": ""}] * (3 * authz.LARGE_AT_ONCE)


def test_concurrent_creates_count_those_not_yet_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap holds for a burst: a create allowed but not yet answered by the daemon
    counts, until Docker's AuthZRes for it arrives."""
    ledger = authz.CreateLedger()
    monkeypatch.setattr(authz, "CREATES", ledger)
    monkeypatch.setattr(activity, "touch", lambda user: None)
    made = [0]

    def capped(request: dict[str, Any]) -> tuple[bool, str]:
        return made[0] + ledger.in_flight() < 2, "dtenant: cap"

    server = authz.PluginServer(socket.socket(socket.AF_UNIX), "alice", capped)
    create = json.dumps({"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create"})
    assert [server.authorize(create.encode())["Allow"] for _ in range(3)] == [True, True, False]
    answer = json.dumps({"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create?name=x",
                         "ResponseStatusCode": 404}).encode()  # fmt: skip
    assert server.answer("/AuthZPlugin.AuthZRes", answer) == (200, {"Allow": True})
    assert ledger.in_flight() == 1
    assert server.authorize(create.encode())["Allow"] is True
    other = json.dumps({"RequestMethod": "POST", "RequestUri": "/v1.41/containers/x/start"})
    server.answer("/AuthZPlugin.AuthZRes", other.encode())
    assert ledger.in_flight() == 2
    server.server_close()


def test_the_daemon_counts_only_when_the_bound_could_reach_the_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Creates far below the cap do not wait for the daemon's /info; near the cap, and
    after REASK_AFTER, the daemon's own count decides."""
    from dtenant_session import dockerapi

    ledger = authz.CreateLedger()
    monkeypatch.setattr(authz, "CREATES", ledger)
    asked: list[int] = []
    daemon = [3]

    def info_count(user: str, key: str, agent: str) -> int:
        asked.append(daemon[0])
        return daemon[0]

    monkeypatch.setattr(dockerapi, "info_count", info_count)
    assert authz.containers("alice", 6) == 3 and len(asked) == 1
    ledger.allowed()  # one create allowed, not yet answered
    assert authz.containers("alice", 6) == 4 and len(asked) == 1
    ledger.answered()
    daemon[0] = 4
    ledger.allowed()
    ledger.answered()
    daemon[0] = 5
    assert authz.containers("alice", 6) == 5 and len(asked) == 1  # bound 5 < 6
    ledger.allowed()
    daemon[0] = 2  # the user removed some meanwhile
    assert authz.containers("alice", 6) == 3 and len(asked) == 2  # bound 6: asked
    monkeypatch.setattr(ledger, "_asked", ledger._asked - ledger.REASK_AFTER - 1)
    assert authz.containers("alice", 100) == 3 and len(asked) == 3  # too old: asked again


def test_a_plugin_without_a_policy_builds_it_as_soon_as_it_can(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It starts with its daemon, maybe before the administrator put the tenant right
    (no stamp changes for it to notice): it tries again at every look meanwhile."""
    attempts: list[str] = []

    def build(user: str) -> authz.Policy:
        attempts.append(user)
        if len(attempts) < 3:
            raise authz.PolicyUnavailable(f"attempt {len(attempts)}")
        return lambda request: (True, "")

    monkeypatch.setattr(authz, "build_policy", build)
    monkeypatch.setattr(authz, "configuration_stamp", lambda user: ())
    monkeypatch.setattr(authz, "CONFIG_CHECK_EVERY", -1.0)
    policy = authz.ReloadingPolicy("alice")
    assert policy({}) == (False, "dtenant: the policy of alice cannot be loaded (attempt 2); "
                          "ask the administrator")  # fmt: skip
    assert policy({}) == (True, "")
    assert policy({}) == (True, "") and len(attempts) == 3  # valid: built again only on change


def test_the_configuration_is_read_in_a_child_that_names_what_is_wrong() -> None:
    with pytest.raises(authz.PolicyUnavailable, match="dtenant-no-such-user"):
        authz.read_settings("dtenant-no-such-user")


@pytest.mark.parametrize(
    ("child", "reason"),
    [
        ("raise SystemExit(3)", r"the configuration reader failed \(exit status 3\)"),
        ("print('not json')", r"the configuration reader failed \(exit status 0\)"),
        ("print('{}')", "the configuration reader answered no settings"),
        ("import time; time.sleep(60)", r"the configuration reader failed \(exit status -9\)"),
        ("import sys; sys.stdout.write('x' * (3 << 20))", r"failed \(exit status -9\)"),
    ],
)
def test_a_configuration_reader_that_fails_leaves_the_plugin_without_a_policy(
    monkeypatch: pytest.MonkeyPatch, child: str, reason: str
) -> None:
    monkeypatch.setattr(authz, "_CHILD", child)
    monkeypatch.setattr(authz, "SETTINGS_TIMEOUT", 2.0)
    with pytest.raises(authz.PolicyUnavailable, match=reason):
        authz.read_settings("alice")


def test_the_policy_is_built_from_the_childs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    rules: dict[str, object] = {"max_containers": 0, "log_drivers": ["json-file"]}
    settings = {"rules": rules, "home": "/home/alice", "pool": "10.128.16.0/20",
                "roots": ["/home/alice"]}  # fmt: skip
    monkeypatch.setattr(authz, "start_reading_settings", lambda user: lambda: settings)
    decide = authz.build_policy("alice")
    assert decide({"RequestMethod": "GET", "RequestUri": "/v1.41/containers/json"})[0] is True
    privileged = {"RequestMethod": "POST", "RequestUri": "/v1.41/containers/create",
                  "RequestBody": "eyJIb3N0Q29uZmlnIjogeyJQcml2aWxlZ2VkIjogdHJ1ZX19"}  # fmt: skip
    assert decide(privileged)[0] is False
    settings["rules"] = {"no_such_rule": 1}
    with pytest.raises(authz.PolicyUnavailable, match="no_such_rule"):
        authz.build_policy("alice")


def test_the_child_reads_rules_home_networks_and_resolved_bind_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import getpass
    import os

    from dtenant_session import config, paths

    me = getpass.getuser()
    (tmp_path / me).mkdir()
    (tmp_path / me / "daemon.json").write_text(
        json.dumps({"default-address-pools": [{"base": "10.128.16.0/20", "size": 24}]})
    )
    monkeypatch.setattr(paths, "TENANTS_DIR", str(tmp_path))
    monkeypatch.setattr(config, "load", lambda: config.Config())
    found = authz.policy_settings(me)
    home = os.path.realpath(os.path.expanduser("~" + me))
    assert found == {"rules": config.Config().policy.as_dict(), "home": home,
                     "pool": "10.128.16.0/20", "roots": [home]}  # fmt: skip


def test_a_quick_rewrite_of_the_configuration_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrite just after the plugin's look can keep the file's inode, size and time
    stamp (the file system's clock is coarse, a few ms): the policy follows it anyway."""
    main, dropins = tmp_path / "dtenant.toml", tmp_path / "dtenant.toml.d"
    dropins.mkdir()
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "daemon.json").write_text("{}")
    monkeypatch.setattr(paths, "CONFIG_FILE", str(main))
    monkeypatch.setattr(paths, "CONFIG_DROPINS", str(dropins))
    monkeypatch.setattr(paths, "TENANTS_DIR", str(tmp_path))
    dropin = dropins / "60-binds.toml"
    dropin.write_text('[policy]\nbind_roots = ["/scratch/a"]\n')
    built: list[bytes] = []

    def build(user: str) -> authz.Policy:
        built.append(dropin.read_bytes())
        return lambda request: (True, "")

    monkeypatch.setattr(authz, "build_policy", build)
    monkeypatch.setattr(authz, "CONFIG_CHECK_EVERY", -1.0)
    policy = authz.ReloadingPolicy("alice")
    before = os.stat(dropin)
    with dropin.open("r+b") as stream:  # in place, the same size, within the same tick
        stream.write(b'[policy]\nbind_roots = ["/scratch/b"]\n')
    os.utime(dropin, ns=(before.st_atime_ns, before.st_mtime_ns))
    policy({})
    assert built[-1].endswith(b'"/scratch/b"]\n'), "the rewrite was not seen"
    policy({})
    assert len(built) == 2, "built again without a change"
