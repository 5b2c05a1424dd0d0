"""The SQLite registry: the one source of truth for every tenant's allocations.

WAL mode and BEGIN IMMEDIATE: concurrent first logins serialise on the write lock, so
two tenants never get the same slot or subnet, and a re-login returns what was stored.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass, replace
from pathlib import Path

from dtenant_session import allocate, dbread, files, paths
from dtenant_session.config import Network
from dtenant_session.errors import DtenantError
from dtenant_session.tenant import Tenant

SCHEMA_VERSION = 2
# Version 2 added `home` (a rename is certain only with the same uid and home) and
# `id_base` (the host id of the tenant's container root: 0 for a tenant of version 0.1,
# whose data still carries the old mapping until it is shifted).
SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    user TEXT PRIMARY KEY,
    uid INTEGER NOT NULL,
    slot INTEGER NOT NULL UNIQUE,
    bridge_subnet TEXT NOT NULL UNIQUE,
    networks_pool TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    home TEXT NOT NULL DEFAULT '',
    id_base INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
COLUMNS = "user, uid, slot, bridge_subnet, networks_pool, created, home, id_base"
INSERT = f"INSERT INTO tenants ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
UPGRADES = {
    2: (
        "ALTER TABLE tenants ADD COLUMN home TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE tenants ADD COLUMN id_base INTEGER NOT NULL DEFAULT 0",
    ),
}


class RegistryError(DtenantError):
    pass


@dataclass(frozen=True)
class IdSpace:
    """Where a new tenant's block of container ids may go: at or above `base`, clear of
    every [first, last] range in `avoid`."""

    base: int
    avoid: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Allocation:
    user: str
    uid: int
    slot: int
    bridge_subnet: str
    networks_pool: str
    created: float
    home: str = ""
    id_base: int = 0  # 0: not mapped yet (a tenant of version 0.1)

    @property
    def tenant(self) -> Tenant:
        return Tenant(self.user, self.uid, self.slot, self.id_base)

    @property
    def gateway(self) -> str:
        """The bridge's own address: the first host of its subnet."""
        return str(ipaddress.IPv4Network(self.bridge_subnet).network_address + 1)

    @property
    def bridge_address(self) -> str:
        prefix = ipaddress.IPv4Network(self.bridge_subnet).prefixlen
        return f"{self.gateway}/{prefix}"


def _root_only(path: Path) -> None:
    """SQLite gives its -wal and -shm files the database's mode: all three root's alone."""
    files.make_private(path, create=True)
    for suffix in ("-wal", "-shm"):
        files.make_private(path.with_name(path.name + suffix))


class Registry:
    def __init__(
        self,
        path: Path = Path(paths.REGISTRY),
        *,
        busy_timeout: float = 5.0,
        read_only: bool = False,
    ) -> None:
        """read_only: for those who only look (status, verify, the reaper): no file is
        made or changed, and a full disk still lets them read (dbread.py)."""
        self.path = path
        if read_only and path.exists():  # else made, as by a writer
            try:
                self._db = dbread.connect(str(path), busy_timeout)
            except (sqlite3.Error, OSError) as exc:
                raise RegistryError(self._explain(exc)) from None
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _root_only(path)
            self._db = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None)
            self._db.execute("PRAGMA synchronous=NORMAL")
            # Reading the schema also tells a corrupt file from a registry. Creating it is
            # the only write here: readers never wait for a writer's lock.
            known = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tenants'"
            ).fetchone()
            if known is None:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
            elif self._version() < SCHEMA_VERSION:
                self._upgrade()
        except (sqlite3.Error, OSError) as exc:
            raise RegistryError(self._explain(exc)) from None

    def _version(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        return int(row[0]) if row else 1

    def _upgrade(self) -> None:
        """Older schemas gain their new columns, once, under the write lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            version = self._version()
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in UPGRADES[target]:
                    self._db.execute(statement)
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _explain(self, exc: Exception) -> str:
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
            return (
                f"registry {self.path} is corrupt ({exc}); no allocation was made. Move it "
                "aside and run `dtenant registry rebuild` to recover from the files on disk"
            )
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return f"registry {self.path} is locked by another process ({exc})"
        if isinstance(exc, sqlite3.OperationalError) and (
            "full" in str(exc) or "disk I/O" in str(exc)
        ):
            try:
                room = os.statvfs(self.path.parent)
                full = room.f_bavail == 0 or room.f_favail == 0
            except OSError:
                full = False
            if full or "full" in str(exc):
                return f"registry {self.path}: no space left on {self.path.parent} ({exc})"
        if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
            return f"registry {self.path} is read-only ({exc})"
        return f"registry {self.path}: {exc}"

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise RegistryError(self._explain(exc)) from None
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._rollback()
            raise RegistryError(self._explain(exc)) from None
        except BaseException:
            self._rollback()
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise RegistryError(self._explain(exc)) from None

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # a file that cannot be written, say
            self._db.execute("ROLLBACK")

    def _rows(self, query: str, args: Iterable[object] = ()) -> list[Allocation]:
        try:
            cursor = self._db.execute(
                f"SELECT {COLUMNS} FROM tenants " + query,  # noqa: S608
                tuple(args),
            )
            return [Allocation(*row) for row in cursor.fetchall()]
        except sqlite3.Error as exc:
            raise RegistryError(self._explain(exc)) from None

    def get(self, user: str) -> Allocation | None:
        found = self._rows("WHERE user = ?", (user,))
        return found[0] if found else None

    def all(self) -> list[Allocation]:
        return self._rows("ORDER BY slot")

    def allocate(
        self,
        user: str,
        uid: int,
        network: Network,
        avoid: Iterable[ipaddress.IPv4Network],
        busy_slots: Iterable[int] = (),
        *,
        home: str = "",
        ids: IdSpace | None = None,
    ) -> Allocation:
        """The user's allocation, made now in one transaction if there is none yet.

        `avoid`: subnets routed on the host; `busy_slots`: slots whose bridge name a link
        already has (a tenant the registry lost, after a purge or a rebuild); `ids`: where
        its container ids may go (None: decided later, by `map_ids`)."""
        avoid = list(avoid)
        busy = set(busy_slots)
        with self._write() as db:
            existing = self.get(user)
            if existing is not None:
                if existing.uid != uid:
                    raise RegistryError(
                        f"user {user!r} now has uid {uid} but the registry holds uid "
                        f"{existing.uid} for that name: a different account? Run "
                        f"`dtenant remove {user}` to release the old tenant first"
                    )
                return existing
            rows = self.all()
            allocation = Allocation(
                user=user,
                uid=uid,
                slot=allocate.first_free_slot({r.slot for r in rows} | busy),
                bridge_subnet=allocate.first_free_subnet(
                    network.bridge_pool, network.bridge_prefix,
                    (r.bridge_subnet for r in rows), avoid, pool_key="network.bridge_pool",
                ),
                networks_pool=allocate.first_free_subnet(
                    network.networks_pool, network.tenant_pool_prefix,
                    (r.networks_pool for r in rows), avoid, pool_key="network.networks_pool",
                ),
                created=time.time(),
                home=home,
                id_base=self._free_id_block(rows, ids) if ids else 0,
            )  # fmt: skip
            db.execute(
                INSERT,
                astuple(allocation),
            )
            return allocation

    @staticmethod
    def _free_id_block(rows: list[Allocation], ids: IdSpace) -> int:
        return allocate.first_free_id_block(ids.base, (r.id_base for r in rows if r.id_base),
                                            ids.avoid)  # fmt: skip

    def map_ids(self, user: str, ids: IdSpace) -> Allocation:
        """Give a tenant that has none (one of version 0.1) its block of container ids."""
        with self._write() as db:
            existing = self.get(user)
            if existing is None:
                raise RegistryError(f"{user!r} is not a registered tenant")
            if existing.id_base:
                return existing
            id_base = self._free_id_block(self.all(), ids)
            db.execute("UPDATE tenants SET id_base = ? WHERE user = ?", (id_base, user))
        return replace(existing, id_base=id_base)

    def set_home(self, user: str, home: str) -> None:
        with self._write() as db:
            db.execute("UPDATE tenants SET home = ? WHERE user = ?", (home, user))

    def by_uid(self, uid: int) -> list[Allocation]:
        return self._rows("WHERE uid = ?", (uid,))

    def rename(self, old: str, new: str, *, uid: int, home: str) -> None:
        """The tenant now belongs to the account `new` (its uid and home)."""
        with self._write() as db:
            db.execute("UPDATE tenants SET user = ?, uid = ?, home = ? WHERE user = ?",
                       (new, uid, home, old))  # fmt: skip

    def insert(self, allocation: Allocation) -> None:
        """Put back an allocation as it was (recovery); conflicts are errors."""
        try:
            with self._write() as db:
                db.execute(
                    INSERT,
                    astuple(allocation),
                )
        except sqlite3.IntegrityError as exc:
            raise RegistryError(
                f"{allocation.user}: conflicts with another tenant ({exc})"
            ) from None

    def remove(self, user: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM tenants WHERE user = ?", (user,))

    def problems(self) -> list[str]:
        """Integrity check: SQLite's own, then no shared slot, bridge or overlapping range."""
        try:
            verdict = self._db.execute("PRAGMA integrity_check").fetchone()[0]
        except sqlite3.Error as exc:
            return [self._explain(exc)]
        found = [] if verdict == "ok" else [f"sqlite integrity_check: {verdict}"]
        rows = self.all()
        ranges = [(ipaddress.IPv4Network(r.bridge_subnet), r.user) for r in rows]
        ranges += [(ipaddress.IPv4Network(r.networks_pool), r.user) for r in rows]
        ranges.sort(key=lambda item: (item[0].network_address, item[0].prefixlen))
        # CIDR ranges overlap only by containment: sorted by start, a range that contains
        # another comes right before it.
        for (previous, previous_user), (net, user) in itertools.pairwise(ranges):
            if net.network_address <= previous.broadcast_address:
                found.append(f"{user} {net} overlaps {previous_user} {previous}")
        slots = [r.slot for r in rows]
        if len(slots) != len(set(slots)):
            found.append("two tenants share a slot")
        bases = [r.id_base for r in rows if r.id_base]
        if len(bases) != len(set(bases)):
            found.append("two tenants share a block of container ids")
        return found
