from __future__ import annotations

from dataclasses import replace

from dtenant_session import reaper
from dtenant_session.config import Reap

RULES = Reap(idle_timeout=600, stop_running_after=0)
NOW = 10_000.0


def _seen(**overrides: object) -> reaper.Observation:
    base: dict[str, object] = dict(user="alice", uid=1000, daemon="active", sessions=0,
                                   connections=0, running_containers=0,
                                   last_activity=NOW - 3600)  # fmt: skip
    base.update(overrides)
    return reaper.Observation(**base)  # type: ignore[arg-type]


def test_idle_daemon_is_stopped() -> None:
    decision = reaper.decide(_seen(), RULES, NOW)
    assert decision.action == reaper.STOP
    assert decision.idle_for == 3600


def test_stopped_daemons_are_skipped_without_asking_them() -> None:
    assert reaper.decide(_seen(daemon="inactive", running_containers=None), RULES, NOW).action == (
        reaper.SKIP
    )


def test_every_sign_of_use_keeps_the_daemon() -> None:
    for seen, reason in [
        (_seen(sessions=2), "2 login session(s)"),
        (_seen(connections=1), "1 open API connection(s)"),
        (_seen(last_activity=NOW - 10), "last activity 10 s ago"),
        (_seen(running_containers=3), "3 running container(s)"),
        (_seen(running_containers=None), "running containers unknown"),
    ]:
        decision = reaper.decide(seen, RULES, NOW)
        assert decision.action == reaper.KEEP
        assert any(reason in r for r in decision.reasons), decision.reasons


def test_running_containers_are_stopped_only_when_configured() -> None:
    rules = Reap(idle_timeout=600, stop_running_after=7200)
    assert reaper.decide(_seen(running_containers=1), rules, NOW).action == reaper.KEEP
    old = _seen(running_containers=1, last_activity=NOW - 8000)
    assert reaper.decide(old, rules, NOW).action == reaper.STOP_WITH_CONTAINERS
    assert reaper.decide(old, RULES, NOW).action == reaper.KEEP


def test_no_recorded_activity_counts_as_idle() -> None:
    assert reaper.decide(_seen(last_activity=None), RULES, NOW).action == reaper.STOP


def test_socket_connections_count_live_peers_only() -> None:
    ss = (
        "u_str ESTAB 0 0 /run/docker-alice.sock 345850 * 345851\n"
        "u_str ESTAB 0 0 /run/docker-alice.sock 345852 * 0\n"
        "u_str ESTAB 0 0 /run/docker-bob.sock 345860 * 345861\n"
        "u_str ESTAB 0 0 * 345861 * 345860\n"
    )
    assert reaper.socket_connections(ss) == {"/run/docker-alice.sock": 1, "/run/docker-bob.sock": 1}


def test_socket_connections_count_clients_waiting_in_the_queue() -> None:
    """A frozen daemon accepts nothing: its clients wait in the listening socket's queue
    (Recv-Q of its LISTEN line), where no ESTAB line names the socket's path."""
    ss = (
        "u_str LISTEN 2 4096 /run/docker-alice.sock 345800 * 0\n"
        "u_str LISTEN 0 4096 /run/docker-bob.sock 345801 * 0\n"
        "u_str ESTAB 0 0 * 345870 * 0\n"
        "u_str ESTAB 0 0 * 345871 * 0\n"
    )
    assert reaper.socket_connections(ss) == {"/run/docker-alice.sock": 2}


def test_a_session_seen_by_a_pass_counts_as_activity_now() -> None:
    logged_in, gone, unknown = _seen(sessions=1), _seen(user="bob"), _seen(sessions=None)
    marked = reaper.mark_sessions_active([logged_in, gone, unknown], NOW)
    assert [seen.last_activity for seen in marked] == [NOW, NOW - 3600, NOW - 3600]
    # After the logout, the next pass keeps the daemon until idle_timeout has passed.
    after = reaper.decide(replace(marked[0], sessions=0), RULES, NOW + 60)
    assert after.action == reaper.KEEP
    assert "last activity 60 s ago" in after.reasons[0]


def test_listed_sockets_are_the_local_inodes_ss_shows() -> None:
    ss = (
        "u_str LISTEN 0 4096 /run/docker-ann.sock 17304383 * 0\n"
        "u_str ESTAB 0 0 * 17304390 * 17304391\n"
        "u_dgr UNCONN 0 0 /run/systemd/notify 1234 * 0\n"
        "garbage\n"
    )
    assert reaper.listed_sockets(ss) == {17304383, 17304390, 1234}
