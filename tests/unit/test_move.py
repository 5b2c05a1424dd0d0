"""The pure parts of moving a busy daemon (move.py): which process may name the mount
namespace a new dockerd enters, and the move's mark."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtenant_session import move

HELD = "/dtenant.slice/dtenant-alice.slice/dtenant-moved-alice-1.scope"
HOST_NS = 4026531840


def shim(**changes: object) -> move.Process:
    fields: dict[str, object] = {"pid": 42, "uids": (0, 0, 0, 0), "exe": move.SHIM,
                                 "group": HELD, "mount_ns": 4026532999}  # fmt: skip
    fields.update(changes)
    return move.Process(**fields)  # type: ignore[arg-type]


def test_a_root_shim_in_a_held_scope_in_a_private_namespace_is_trusted() -> None:
    assert move.is_held_shim(shim(), [HELD], HOST_NS)
    assert move.is_held_shim(shim(exe=f"{move.SHIM} (deleted)"), [HELD], HOST_NS)  # updated


def test_anything_else_is_not() -> None:
    assert not move.is_held_shim(shim(uids=(1000, 0, 0, 0)), [HELD], HOST_NS)
    assert not move.is_held_shim(shim(uids=()), [HELD], HOST_NS)
    assert not move.is_held_shim(shim(exe="/bin/sh"), [HELD], HOST_NS)
    assert not move.is_held_shim(shim(exe=f"/tmp{move.SHIM}"), [HELD], HOST_NS)
    # A container's process: its own scope, whatever its executable is called.
    container = "/dtenant.slice/dtenant-alice.slice/docker-abc.scope"
    assert not move.is_held_shim(shim(group=container), [HELD], HOST_NS)
    assert not move.is_held_shim(shim(group=f"{HELD}/sub"), [HELD], HOST_NS)
    assert not move.is_held_shim(shim(mount_ns=HOST_NS), [HELD], HOST_NS)  # the host's own
    assert not move.is_held_shim(shim(mount_ns=None), [HELD], HOST_NS)
    assert not move.is_held_shim(shim(), [], HOST_NS)


def test_a_shim_of_the_unit_is_one_in_its_cgroup_or_below() -> None:
    unit = "/dtenant.slice/dtenant-alice.slice/docker@alice.service"
    assert move.in_group(shim(group=unit), unit)
    assert move.in_group(shim(group=f"{unit}/sub"), unit)
    assert not move.in_group(shim(group=f"{unit}x"), unit)
    assert not move.in_group(shim(group=None), unit)


def test_the_systemd_cgroup_of_a_process() -> None:
    hybrid = "12:pids:/x\n1:name=systemd:/dtenant.slice/a.service\n0::/dtenant.slice/a.service\n"
    assert move.systemd_group(hybrid) == "/dtenant.slice/a.service"
    assert move.systemd_group("0::/system.slice/b.service\n") == "/system.slice/b.service"
    assert move.systemd_group("") is None


def test_held_scopes_are_dtentants_own() -> None:
    names = ["docker-abc.scope", "dtenant-moved-alice-1.scope", "docker@alice.service",
             "dtenant-moved-x.slice", "dtenant-moved-alice-0.scope"]  # fmt: skip
    assert move.held_scope_names(names) == ["dtenant-moved-alice-0.scope",
                                            "dtenant-moved-alice-1.scope"]  # fmt: skip
    name = move.scope_name("a\\x2db", 12.5)
    assert name == "dtenant-moved-a\\x2db-12500.scope"
    assert move.held_scope_names([name]) == [name]


def test_the_mark_reads_back_and_refuses_anything_else() -> None:
    mark = move.Mark("0123abcd", "dtenant-moved-alice-1.scope")
    back = move.parse_mark(move.mark_text(mark))
    assert back is not None
    assert (back.invocation, back.scope) == (mark.invocation, mark.scope)
    for bad in ("", "{", "[]", '{"invocation": "x"}', '{"invocation": "", "scope": '
                '"dtenant-moved-a.scope"}', '{"invocation": "x", "scope": "docker@a.service"}',
                '{"invocation": "x", "scope": "../dtenant-moved-a.scope"}'):  # fmt: skip
        assert move.parse_mark(bad) is None, bad


def test_a_mark_counts_only_for_its_own_invocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(move, "MOVING_DIR", str(tmp_path))
    monkeypatch.setenv("INVOCATION_ID", "aaaa")
    (tmp_path / "alice").write_text(move.mark_text(move.Mark("aaaa", "dtenant-moved-a-1.scope")))
    (tmp_path / "bob").write_text(move.mark_text(move.Mark("bbbb", "dtenant-moved-b-1.scope")))
    if (tmp_path / "alice").stat().st_uid == 0:
        mark = move.current_mark("alice")
        assert mark is not None
        assert mark.scope == "dtenant-moved-a-1.scope"
    assert move.current_mark("bob") is None  # a mark left by another (interrupted) move
    assert move.current_mark("carol") is None


OWN = ("40 30 0:50 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw,mode=1777\n"
       "41 30 0:51 / /var/tmp rw,nosuid,nodev - tmpfs tmpfs rw,mode=1777\n")  # fmt: skip
PRIVATE = ("40 30 8:1 /tmp/systemd-private-1-docker@alice.service-2/tmp /tmp rw - ext4 "
           "/dev/sda1 rw\n41 30 8:1 /var/tmp/systemd-private-1-docker@alice.service-3/tmp "
           "/var/tmp rw - ext4 /dev/sda1 rw\n")  # fmt: skip
PRIVATE_ON_TMPFS = ("40 30 0:30 /systemd-private-1-docker@alice.service-2/tmp /tmp rw - tmpfs "
                    "tmpfs rw\n41 30 0:51 / /var/tmp rw - tmpfs tmpfs rw\n")  # fmt: skip


def test_only_a_daemon_whose_tmp_is_its_namespaces_own_can_move() -> None:
    from dtenant_session import lifecycle, mountinfo

    assert lifecycle.keeps_its_tmp(mountinfo.parse(OWN))
    assert not lifecycle.keeps_its_tmp(mountinfo.parse(PRIVATE))  # an older unit's daemon
    assert not lifecycle.keeps_its_tmp(mountinfo.parse(PRIVATE_ON_TMPFS))  # host /tmp tmpfs
    assert not lifecycle.keeps_its_tmp(mountinfo.parse(OWN.splitlines()[0] + "\n"))
    # The host's /tmp tmpfs below, PrivateTmp='s bind on top: the top one counts.
    assert not lifecycle.keeps_its_tmp(mountinfo.parse(OWN + PRIVATE_ON_TMPFS))
