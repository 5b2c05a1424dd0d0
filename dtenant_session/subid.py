"""/etc/subuid and /etc/subgid: each tenant's own block of container ids, for userns-remap.

Docker hands its remapped root daemon-private paths (layers, volumes, the fifo directory
of the exec-root), so container root must be an id that nobody logs in as. Each tenant
has a block of ID_BLOCK host ids of its own (the registry's id_base) and a system account
that owns them (idmap.py); the tenant's daemon runs with `userns-remap` naming it. The
map keeps the user's own id (Podman's keep-id):

    ID:ID:U          container ids 0..U-1     -> host ID..ID+U-1   (root: ID, nobody)
    ID:U:1           container id U           -> host U            (the user herself)
    ID:ID+U+1:REST   container ids U+1..65535 -> host ID+U+1..

where U is the user's uid (subuid) or primary gid (subgid), so `docker run --user
$(id -u):$(id -g) -v ~/w:/w` writes files the user owns. A U outside the block gets the
plain map ID:ID:65536. Docker 20.10 builds its map in file order (pkg/idtools
createIDMap, entries of the uid string, else of the name), but shadow's tools sort
/etc/subuid by range start whenever they allocate a range (useradd): the user's own
line would then come first and make her container root. So the map lives in files of
the tenant's own (TENANT/subuid, TENANT/subgid) that docker@.service binds over
/etc/subuid and /etc/subgid in the daemon's namespace; the host's files only reserve
the block (ID:ID:65536, keyed by the account's uid, which only that account could use
with newuidmap). Writes take shadow's own lock and replace files atomically.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

from dtenant_session import files
from dtenant_session.errors import DtenantError

SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
ID_BLOCK = 65536  # host ids of one tenant: its containers' uids and gids 0..65535
LOCK_TIMEOUT = 5.0


class SubidError(DtenantError):
    pass


class Range:
    """One line of /etc/subuid or /etc/subgid. Not a dataclass: the pre-start check of
    every daemon reads these, and dataclasses costs ~5 ms of imports there."""

    __slots__ = ("count", "name", "start")

    def __init__(self, name: str, start: int, count: int) -> None:
        self.name, self.start, self.count = name, start, count

    def _key(self) -> tuple[str, int, int]:
        return self.name, self.start, self.count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Range) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Range(name={self.name!r}, start={self.start!r}, count={self.count!r})"

    @property
    def end(self) -> int:
        return self.start + self.count - 1

    def overlaps(self, other: Range) -> bool:
        return self.start <= other.end and other.start <= self.end

    def line(self) -> str:
        return f"{self.name}:{self.start}:{self.count}"


def parse(text: str) -> list[Range]:
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
            ranges.append(Range(fields[0], int(fields[1]), int(fields[2])))
    return ranges


def account_name(id_base: int) -> str:
    """The system account that owns a tenant's block: never a person, never a number."""
    return f"_dtenant{id_base // ID_BLOCK}"


def keep_id_map(id_base: int, own: int) -> list[Range]:
    """A tenant's entries in one file: keyed by `id_base` (its account's uid), with the
    user's own id `own` kept at the same number inside the container (pure)."""
    key = str(id_base)
    if not 0 < own < ID_BLOCK:
        return [Range(key, id_base, ID_BLOCK)]
    ranges = [Range(key, id_base, own), Range(key, own, 1)]
    rest = ID_BLOCK - own - 1
    if rest:
        ranges.append(Range(key, id_base + own + 1, rest))
    return ranges


def docker_selection(text: str, uid: int, name: str) -> list[Range]:
    """The entries Docker 20.10 maps for the account (uid, name): those keyed by the uid
    number, else those keyed by the name, in file order (pure)."""
    ranges = parse(text)
    by_uid = [r for r in ranges if r.name == str(uid)]
    return by_uid or [r for r in ranges if r.name == name]


def mapping_problems(texts: dict[str, str], id_base: int, account: str, own: dict[str, int]
                     ) -> list[str]:  # fmt: skip
    """What would make Docker map the tenant otherwise than intended (pure): `texts` are
    the files the daemon reads, `own` the user's uid and gid, both keyed by file name."""
    found = []
    for file, text in texts.items():
        wanted = keep_id_map(id_base, own[file])
        taken = docker_selection(text, id_base, account)
        if taken != wanted:
            shown = ", ".join(r.line() for r in taken) or "nothing"
            found.append(f"{file}: Docker would map {account} (uid {id_base}) with {shown}, "
                         f"not {', '.join(w.line() for w in wanted)}")  # fmt: skip
    return found


Lookup = Callable[[str], "int | None"]
ReverseLookup = Callable[[int], "str | None"]


def foreign_keys(text: str, uid_of: Lookup, name_of: ReverseLookup, file: str) -> list[str]:
    """Entries keyed by a name of digits that another account has as its uid: Docker
    (and shadow) would hand them to that account (pure, given the two lookups)."""
    found = []
    for r in parse(text):
        if not r.name.isdigit():
            continue
        named = uid_of(r.name)  # an account *named* like the number
        holder = name_of(int(r.name))  # the account whose uid the number is
        if named is not None and named != int(r.name) and holder is not None:
            found.append(f"{file}: {r.line()} belongs to the user named {r.name!r} (uid "
                         f"{named}), but Docker gives it to uid {r.name} ({holder!r})")  # fmt: skip
    return found


def overlaps(texts: dict[str, str]) -> list[str]:
    """Ranges of different owners that overlap, in either file (pure)."""
    found = []
    for file, text in texts.items():
        ranges = sorted(parse(text), key=lambda r: r.start)
        for index, first in enumerate(ranges):
            for second in ranges[index + 1 :]:
                if second.start > first.end:
                    break
                if second.name != first.name and second.count > 1 and first.count > 1:
                    found.append(f"{file}: {first.line()} overlaps {second.line()}")
    return found


def plan(text: str, wanted: list[Range], file: str) -> str | None:
    """The new file content, or None when the entries keyed like `wanted` are already
    exactly `wanted`, in order (pure). No other entry may overlap the tenant's block."""
    key = wanted[0].name
    block = Range(key, int(key), ID_BLOCK)
    ranges = parse(text)
    clash = [r for r in ranges if r.name != key and r.overlaps(block)]
    if clash:
        raise SubidError(
            f"{file}: {clash[0].line()} overlaps the container ids {block.start}-{block.end} "
            f"of a tenant; move that entry or remove the tenant"
        )
    if [r for r in ranges if r.name == key] == wanted:
        return None
    kept = [line for line in text.splitlines() if line.split(":", 1)[0] != key]
    return "\n".join([*kept, *(w.line() for w in wanted)]) + "\n"


def without(text: str, lines: set[str]) -> str | None:
    """The file without exactly these lines, or None when none is there (pure)."""
    kept = [line for line in text.splitlines() if line.strip() not in lines]
    return None if len(kept) == len(text.splitlines()) else "\n".join(kept) + "\n"


@contextlib.contextmanager
def shadow_lock(file: str, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """The lock shadow's tools (useradd, usermod) take: FILE.lock holding the pid."""
    lock = f"{file}.lock"
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            if _stale(lock):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            if time.monotonic() > deadline:
                raise SubidError(f"{lock} is held by another program for more than "
                                 f"{timeout:g} s") from None  # fmt: skip
            time.sleep(0.05)
    try:
        os.write(fd, f"{os.getpid()}".encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)


def _stale(lock: str) -> bool:
    try:
        with open(lock) as stream:
            pid = int(stream.read().strip() or "0")
    except (OSError, ValueError):
        return False
    return pid > 0 and not os.path.exists(f"/proc/{pid}")


def read(file: str) -> str:
    try:
        with open(file) as stream:
            return stream.read()
    except FileNotFoundError:
        return ""


def edit(file: str, change: Callable[[str], str | None]) -> bool:
    with shadow_lock(file):
        content = change(read(file))
        if content is None:
            return False
        files.replace(file, content, 0o644)
        return True


def reservation(id_base: int) -> list[Range]:
    """What the host's files hold for a tenant: its block, as one range."""
    return [Range(str(id_base), id_base, ID_BLOCK)]


def private_text(id_base: int, own: int) -> str:
    """A tenant's own subuid or subgid file, the one its daemon reads (pure)."""
    return "".join(f"{r.line()}\n" for r in keep_id_map(id_base, own))


def reserve(id_base: int) -> list[str]:
    """Reserve the tenant's block in the host's files; returns the files that changed."""
    changed = []
    for file in (SUBUID, SUBGID):

        def planned(text: str, file: str = file) -> str | None:
            return plan(text, reservation(id_base), file)

        if edit(file, planned):
            changed.append(file)
    return changed
