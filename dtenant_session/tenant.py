"""User -> Tenant: eligibility and every derived name and path (pure, except `lookup`)."""

from __future__ import annotations

import grp
import pwd
import re
from dataclasses import dataclass
from pathlib import Path

from dtenant_session import disabled, paths
from dtenant_session.config import Eligibility
from dtenant_session.errors import DtenantError
from dtenant_session.subid import SUBGID, SUBUID, account_name

# What dtenant accepts as a user name: what Debian's useradd --badname allows minus what
# would be unsafe as a path component or a unit instance (no '/', no leading '.' or '-').
_USER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")
IFNAMSIZ = 15  # Linux interface names: at most 15 characters


class NotEligible(DtenantError):
    """The user does not get a daemon; the message says why."""


class Disabled(NotEligible):
    """The administrator keeps the user from having a daemon (`dtenant disable`)."""


def check_enabled(user: str) -> None:
    reason = disabled.reason(user)
    if reason is not None:
        raise Disabled(f"user {user!r}: the tenant is disabled by the administrator ({reason}); "
                       f"`dtenant enable {user}` lifts it")  # fmt: skip


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str
    groups: frozenset[str]


def lookup(user: str) -> Account:
    """The passwd entry (files, LDAP, SSSD: whatever NSS says) and the user's groups."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise NotEligible(f"user {user!r}: no such user") from None
    names = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    try:
        names.add(grp.getgrgid(entry.pw_gid).gr_name)
    except KeyError:
        pass
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, frozenset(names))


def _account(entry: pwd.struct_passwd) -> Account:
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, frozenset())


def by_name(user: str) -> Account | None:
    """The passwd entry of a name, without its groups (None: no such user)."""
    try:
        return _account(pwd.getpwnam(user))
    except KeyError:
        return None


def by_uid(uid: int) -> Account | None:
    """The passwd entry NSS gives for a uid, without its groups (None: nobody's)."""
    try:
        return _account(pwd.getpwuid(uid))
    except KeyError:
        return None


def supported_name(name: str) -> bool:
    """A name dtenant handles: one word, no path, no option (no newline either)."""
    return _USER_NAME.fullmatch(name) is not None


def check_eligible(account: Account, rules: Eligibility) -> None:
    """Raise NotEligible naming the rule the account fails."""
    name = account.name
    if account.uid == 0:
        raise NotEligible(f"user {name!r}: root never gets a tenant daemon")
    if not supported_name(name):
        raise NotEligible(
            f"user {name!r}: name not supported (1-32 of A-Z a-z 0-9 _ . -, not starting "
            "with '.' or '-')"
        )
    if name in rules.deny:
        raise NotEligible(f"user {name!r}: listed in eligibility.deny")
    if not rules.min_uid <= account.uid <= rules.max_uid:
        raise NotEligible(
            f"user {name!r}: uid {account.uid} outside eligibility.min_uid..max_uid "
            f"({rules.min_uid}..{rules.max_uid})"
        )
    if rules.groups and not account.groups & set(rules.groups):
        raise NotEligible(
            f"user {name!r}: in none of eligibility.groups ({', '.join(rules.groups)})"
        )


def bridge_name(slot: int) -> str:
    """Short and stable whatever the user name: derived from the registry slot."""
    name = f"dtenant{slot}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"slot {slot} gives a bridge name longer than {IFNAMSIZ}: {name}")
    return name


def unit_instance(user: str) -> str:
    """systemd-escape(1) of a user name, as in docker@INSTANCE.service."""
    return paths.unit_word(user)


@dataclass(frozen=True)
class Tenant:
    """A user's daemon: every name and path derived from the user and its registry slot."""

    user: str
    uid: int
    slot: int
    id_base: int = 0  # host id of container root (0: a tenant of 0.1 not yet mapped)

    @property
    def root_account(self) -> str:
        """The system account that owns the tenant's container ids (its uid and gid are
        id_base); userns-remap names it. Never a person, never a number."""
        return account_name(self.id_base)

    @property
    def instance(self) -> str:
        return unit_instance(self.user)

    @property
    def socket_unit(self) -> str:
        return f"docker@{self.instance}.socket"

    @property
    def service_unit(self) -> str:
        return f"docker@{self.instance}.service"

    @property
    def bridge(self) -> str:
        return bridge_name(self.slot)

    @property
    def slice(self) -> str:
        """The tenant's slice: its daemon and, as cgroup parent, all its containers."""
        return f"dtenant-{self.instance}.slice"

    @property
    def containerd_namespace(self) -> str:
        return f"dtenant{self.slot}"

    @property
    def socket(self) -> Path:
        return Path(paths.socket_path(self.user))

    @property
    def state_dir(self) -> Path:
        return Path(paths.TENANTS_DIR) / self.user

    @property
    def data_root(self) -> Path:
        return self.state_dir / "docker"

    @property
    def disk_image(self) -> Path:
        """The filesystem image holding the data-root when limits.disk_max caps it; with
        the tenant's data (kept unless purged, moved at a rename), hidden from its daemon."""
        return Path(paths.disk_image(self.user))

    @property
    def disk_unit(self) -> str:
        """The mount unit of the data-root (systemd-escape --path --suffix=mount)."""
        return paths.disk_unit(self.user)

    @property
    def daemon_json(self) -> Path:
        return self.state_dir / "daemon.json"

    @property
    def run_dir(self) -> Path:
        return Path(paths.RUN_TENANTS_DIR) / self.user

    @property
    def bundle_dir(self) -> Path:
        """Where dockerd keeps its containers' bundles and fifos: beside the run directory,
        owned by container root. dockerd puts them there itself (libcontainerd's
        prepareBundleDir) because the run directory is not world-traversable."""
        return Path(f"{self.run_dir}.{self.id_base}.{self.id_base}")

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def pidfile(self) -> Path:
        return Path(paths.pid_file(self.user))

    @property
    def subid_files(self) -> dict[str, Path]:
        """The daemon's own /etc/subuid and /etc/subgid (bound over them in its namespace)."""
        return {file: Path(paths.private_subid(self.user, file)) for file in (SUBUID, SUBGID)}

    @property
    def key_file(self) -> Path:
        """dockerd's identity key: its own, since /etc/docker is read-only to it."""
        return self.state_dir / "key.json"

    @property
    def service_dropin(self) -> Path:
        return Path(paths.SYSTEMD_DIR) / f"{self.service_unit}.d" / "50-dtenant.conf"

    @property
    def socket_dropin(self) -> Path:
        return Path(paths.SYSTEMD_DIR) / f"{self.socket_unit}.d" / "50-dtenant.conf"

    @property
    def netdev_file(self) -> Path:
        return Path(paths.NETWORKD_DIR) / f"60-{self.bridge}.netdev"

    @property
    def network_file(self) -> Path:
        return Path(paths.NETWORKD_DIR) / f"60-{self.bridge}.network"
