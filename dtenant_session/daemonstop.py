"""How a tenant's daemon stops: with its containers, as a host shutdown stops them.

The daemon runs with live-restore on: dockerd 20.10 deletes the host's `docker0` at every
start after the first when default-address-pools are set and live-restore is off
(initNetworkController: "Clear stale bridge network"), which would cut the system
daemon's containers off each time a tenant's daemon comes back. But its containers run
under its own containerd, in its mount namespace, which stop with it: so docker@.service
turns live-restore off just before the stop (ExecStop=: its daemon.json changed for the
moment, SIGHUP, until /info says so), and dockerd stops the containers itself, restart
policies apply at the next start. After a crash, containers whose shim died with the
unit are stopped too (ExecStopPost=), so that the next start restarts them cleanly
instead of beside orphans, and so are shims still held from a move. A move to a new
dockerd (move.py) is the exception: live-restore stays on and its containers run on.
Standard library only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from dtenant_session import bootstart, dockerapi, files, move, paths

WAIT = 20.0  # seconds for dockerd to reload its file


def live_restore_off(user: str, main_pid: int) -> str:
    """Turn the running daemon's live-restore off; what happened, for the journal."""
    path = f"{paths.TENANTS_DIR}/{user}/daemon.json"
    with open(path, "rb") as stream:
        original = stream.read()
    settings = json.loads(original)
    if not settings.get("live-restore"):
        return "live-restore already off"
    stopping = json.dumps({**settings, "live-restore": False}, indent=2, sort_keys=True)
    files.replace(path, stopping, files.PRIVATE)
    try:
        os.kill(main_pid, signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                if (
                    json.loads(dockerapi.get(user, "/info", timeout=5)).get("LiveRestoreEnabled")
                    is False
                ):
                    return "live-restore off: the daemon stops its containers"
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        return "the daemon did not turn live-restore off in time"
    finally:
        files.replace(path, original.decode(), files.PRIVATE)


def orphan_scopes(slice_group: str, root: str = "/sys/fs/cgroup") -> list[str]:
    """Container scopes left in the tenant's slice (their daemon is gone), and the scopes
    of shims held since a move."""
    for hierarchy in (f"{root}/systemd", f"{root}/unified", root):
        directory = f"{hierarchy}{slice_group}"
        if os.path.isdir(directory):
            names = os.listdir(directory)
            containers = [n for n in names if n.startswith("docker-") and n.endswith(".scope")]
            return sorted(containers) + move.held_scope_names(names)
    return []


def _systemctl(*args: str) -> str:
    return subprocess.run(["/usr/bin/systemctl", *args], capture_output=True, text=True,
                          timeout=60, check=False).stdout.strip()  # fmt: skip


def main(argv: list[str]) -> int:
    """stop-daemon USER MAINPID (ExecStop=), or stop-daemon --orphans USER (ExecStopPost=)."""
    try:
        if len(argv) == 2 and argv[0] == "--orphans":
            _stop_orphans(argv[1])
            return 0
        if len(argv) == 1:  # no $MAINPID: the daemon exited first (an idle stop's SIGTERM)
            print("dtenant: the daemon has exited; nothing to stop")
            return 0
        if len(argv) == 2 and argv[1].isdigit():
            _stop(argv[0], int(argv[1]))
            return 0
    except Exception as exc:  # noqa: BLE001 - a stop must go on whatever happens here
        print(f"dtenant: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 0
    print("usage: stop-daemon USER MAINPID | stop-daemon --orphans USER", file=sys.stderr)
    return 0


def _stop(user: str, main_pid: int) -> None:
    # Before its containers stop: which of them the daemon restarts at its next start
    # decides whether it starts at boot.
    print(f"dtenant: {bootstart.record(user)}")
    mark = move.current_mark(user)
    if mark is None:
        print(f"dtenant: {live_restore_off(user, main_pid)}")
        return
    group = _systemctl("show", "-p", "ControlGroup", "--value", f"docker@{_escape(user)}.service")
    try:
        lines = move.hand_over(mark, group, main_pid)
    except move.NotHeld as exc:
        # A plain stop then: its containers stop, restart policies apply at the next start.
        move.clear_mark(user)
        lines = [f"not moved: {exc}", live_restore_off(user, main_pid)]
    for line in lines:
        print(f"dtenant: {line}")


def _stop_orphans(user: str) -> None:
    _remove_pid_files(user)
    if move.current_mark(user) is not None:
        print("dtenant: moving to a new daemon: its containers keep running")
        return
    group = _systemctl("show", "-p", "ControlGroup", "--value", f"dtenant-{_escape(user)}.slice")
    scopes = orphan_scopes(group) if group else []
    if scopes:
        stop_scopes(scopes)
    held = len(move.held_scope_names(scopes))
    note = f" and {held} scope(s) of shims held since a move" if held else ""
    print(f"dtenant: stopped {len(scopes) - held} container(s) left without their daemon{note}")


def _remove_pid_files(user: str) -> None:
    """A daemon killed outright (the reaper's idle stop, the OOM killer) leaves its pid file
    and its containerd's (dockerd removes both only at a clean shutdown), and by its next
    start each pid may be anyone's: dockerd refuses to start while its own names a live
    process, and takes a live process named by containerd's for its containerd, waits for
    it in vain and fails. Every process of the unit is gone when ExecStopPost= runs."""
    for pid_file, whose in ((paths.pid_file(user), "daemon"),
                            (paths.containerd_pid_file(user), "containerd")):  # fmt: skip
        try:
            os.unlink(pid_file)
            print(f"dtenant: removed the pid file the {whose} left")
        except FileNotFoundError:
            pass


GRACE = 10.0  # seconds a container gets between SIGTERM and SIGKILL, as with `docker stop`


def stop_scopes(scopes: list[str]) -> None:
    """Stop them all at once, each as `docker stop` would (one by one, each container's
    PID 1 that ignores SIGTERM would take systemd's 90 s, beyond this command's own stop
    timeout). Held shims are killed outright: their daemon is gone."""
    held = move.held_scope_names(scopes)
    if held:
        _systemctl("kill", "--signal=SIGKILL", *held)
    _systemctl("kill", "--signal=SIGTERM", *scopes)
    deadline = time.monotonic() + GRACE
    while (
        time.monotonic() < deadline
        and "active" in _systemctl("show", "-p", "ActiveState", "--value", *scopes).split()
    ):
        time.sleep(0.2)
    _systemctl("kill", "--signal=SIGKILL", *scopes)
    _systemctl("stop", *scopes)


def _escape(user: str) -> str:
    from dtenant_session.tenant import unit_instance

    return unit_instance(user)
