"""Parse /proc/PID/mountinfo (proc(5)); pure apart from `read`.

NamedTuples and no pathlib: the pre-start check of every tenant daemon imports this.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


class MountEntry(NamedTuple):
    mount_id: int
    parent_id: int
    device: str  # "major:minor"
    root: str  # the mounted path inside its filesystem (bind mounts show it)
    mount_point: str
    options: frozenset[str]
    fstype: str
    source: str
    super_options: frozenset[str]


def _unescape(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_line(line: str) -> MountEntry:
    fields = line.split()
    separator = fields.index("-")
    return MountEntry(
        mount_id=int(fields[0]),
        parent_id=int(fields[1]),
        device=fields[2],
        root=_unescape(fields[3]),
        mount_point=_unescape(fields[4]),
        options=frozenset(fields[5].split(",")),
        fstype=fields[separator + 1],
        source=_unescape(fields[separator + 2]),
        super_options=frozenset(fields[separator + 3].split(",")),
    )


def parse(text: str) -> list[MountEntry]:
    return [parse_line(line) for line in text.splitlines() if line.strip()]


def read(pid: int | str = "self") -> list[MountEntry]:
    with open(f"/proc/{pid}/mountinfo") as stream:
        return parse(stream.read())


def under(entries: list[MountEntry], directory: str) -> list[MountEntry]:
    """Mounts at or below `directory`."""
    prefix = directory.rstrip("/") + "/"
    return [e for e in entries if e.mount_point == directory or e.mount_point.startswith(prefix)]


class CgroupMount(NamedTuple):
    """One cgroup hierarchy as the host mounts it below /sys/fs/cgroup."""

    mount_point: str
    fstype: str  # "cgroup" (v1) or "cgroup2"
    controllers: tuple[str, ...]  # v1 options that select the hierarchy, e.g. ("cpu",)

    @property
    def mount_options(self) -> str:
        if self.fstype == "cgroup2":
            return ""
        # A named hierarchy without controllers needs "none", or v1 would bind them all.
        if all(c.startswith("name=") for c in self.controllers):
            return ",".join(("none", *self.controllers))
        return ",".join(self.controllers)


_V1_NON_CONTROLLER_OPTIONS = {
    "rw",
    "ro",
    "relatime",
    "noatime",
    "nosuid",
    "nodev",
    "noexec",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "noprefix",
    "favordynmods",
    "nsdelegate",
    "memory_recursiveprot",
}


def cgroup_mounts(entries: list[MountEntry]) -> list[CgroupMount]:
    """The cgroup hierarchies mounted below /sys/fs/cgroup, in mount order."""
    found: list[CgroupMount] = []
    for entry in entries:
        if entry.fstype not in ("cgroup", "cgroup2"):
            continue
        if not (entry.mount_point + "/").startswith("/sys/fs/cgroup/"):
            continue
        selectors = (
            tuple(
                sorted(
                    opt
                    for opt in entry.super_options
                    if opt not in _V1_NON_CONTROLLER_OPTIONS and not opt.startswith("release_agent")
                )
            )
            if entry.fstype == "cgroup"
            else ()
        )
        found.append(CgroupMount(entry.mount_point, entry.fstype, selectors))
    return found
