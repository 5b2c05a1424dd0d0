"""Where a lab keeps its state on the real machine; everything a lab owns is below it."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from dtenant_session.errors import DtenantError

LAB_ROOT = Path("/var/lib/dtenant-lab")
CGROUP_PREFIX = "dtenant-lab-"  # a lab's cgroup in each hierarchy: the prefix and its name
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")

# Real (ext4) directories bound into the lab: overlay2 and userns-remap cannot live on the
# overlay root. Relative to the lab's /.
DATA_DIRS = ("var/lib/docker", "var/lib/containerd", "var/lib/dtenant")


class LabNameError(DtenantError):
    pass


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LabNameError(
            f"invalid lab name {name!r}: use 1-31 of a-z, 0-9 and '-', starting alphanumeric"
        )
    return name


@dataclass(frozen=True)
class LabPaths:
    name: str
    base: Path = LAB_ROOT

    @property
    def state(self) -> Path:
        return self.base / self.name

    @property
    def root(self) -> Path:
        """Mount point of the overlay that becomes the lab's /."""
        return self.state / "root"

    @property
    def scratch(self) -> Path:
        """tmpfs holding the overlay's upper and work directories."""
        return self.state / "rw"

    @property
    def data(self) -> Path:
        return self.state / "data"

    @property
    def boot_log(self) -> Path:
        return self.state / "boot.log"

    @property
    def binds(self) -> Path:
        """Host directories to show read-only at the same path inside (a checkout)."""
        return self.state / "binds.json"

    def bound(self) -> tuple[str, ...]:
        """The directories in `binds` (none when the file is missing)."""
        return tuple(json.loads(self.binds.read_text())) if self.binds.exists() else ()

    @property
    def record(self) -> Path:
        return self.state / "lab.json"

    @property
    def cgroup_name(self) -> str:
        return f"{CGROUP_PREFIX}{self.name}"

    def data_dir(self, relative: str) -> Path:
        return self.data / relative.replace("/", "_")
