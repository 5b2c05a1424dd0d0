"""/etc/dtenant/dtenant.toml (+ dtenant.toml.d/*.toml) -> frozen dataclasses.

Every setting has a default, so an absent file is a valid configuration. Drop-ins are
merged table by table in lexical order, later files winning. Errors name the file and
the key; unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dtenant_session import paths, trusted
from dtenant_session.errors import DtenantError
from dtenant_session.policy import Rules
from dtenant_session.trusted import Trust

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: Debian's python3-tomli
    import tomli as tomllib  # type: ignore[no-redef]


class ConfigError(DtenantError):
    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Eligibility:
    min_uid: int = 1000
    max_uid: int = 59999
    # When non-empty, only members of one of these groups get a daemon.
    groups: tuple[str, ...] = ()
    deny: tuple[str, ...] = ("root", "nobody")


@dataclass(frozen=True)
class Network:
    isolation: str = "strict"  # "strict": tenants cannot reach each other; "open": routed
    # Each tenant's main bridge gets one subnet of this size from bridge_pool.
    bridge_pool: str = "10.96.0.0/12"
    bridge_prefix: int = 24
    # Each tenant gets one range of tenant_pool_prefix from networks_pool for its own
    # user-defined networks (docker network create, compose), cut into network_prefix.
    networks_pool: str = "10.128.0.0/9"
    tenant_pool_prefix: int = 20
    network_prefix: int = 24
    # What a tenant's daemon (root, in the host's network namespace) may not connect to,
    # besides the host's own addresses and other tenants' ranges, which it never may:
    # link-local (cloud metadata services) and networks the administrator lists.
    daemon_blocked: tuple[str, ...] = ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128")
    # Whether a daemon may still reach DNS (port 53) on the host's own addresses, where
    # the host's resolver often is (systemd-resolved's 127.0.0.53, a local dnsmasq).
    daemon_dns: bool = True


@dataclass(frozen=True)
class Hook:
    time_limit: float = 10.0  # seconds a login may wait for provisioning


@dataclass(frozen=True)
class Reap:
    interval: int = 600  # seconds between reaper passes (dtenant-reap.timer)
    # A daemon is idle after this many seconds without a session, a running container
    # or an API request; idle daemons are stopped (their socket keeps listening).
    idle_timeout: int = 1800
    # 0: a daemon with running containers is never stopped. Otherwise, after this many
    # seconds without a session or an API request its containers are stopped cleanly
    # (restart policies apply at the next start) and then the daemon.
    stop_running_after: int = 0
    # Metrics for node-exporter's textfile collector, rewritten by every pass; "" or a
    # directory that does not exist: none.
    metrics_file: str = "/var/lib/prometheus/node-exporter/dtenant.prom"


@dataclass(frozen=True)
class Limits:
    """systemd resource limits of each tenant's slice (its daemon and all its containers);
    empty means no limit. `dtenant setup` writes them to dtenant-.slice.d/."""

    memory_max: str = "50%"  # MemoryMax=: bytes with K/M/G/T, or a share of RAM
    cpu_quota: str = ""  # CPUQuota=: e.g. "200%" for two CPUs
    tasks_max: str = "8192"  # TasksMax=
    # A hard cap on everything a tenant's daemon stores (images, containers' layers,
    # volumes, build cache, logs): its data-root is a filesystem of this size of its own
    # (disk.py). Empty: no cap, the tenants share the disk of /var/lib/dtenant.
    disk_max: str = ""


@dataclass(frozen=True)
class Userns:
    # Each tenant's containers get a block of 65536 host ids of their own, the first
    # free one at or above subid_base (clear of every range in /etc/subuid and
    # /etc/subgid); blocks stay below 2^31. The default leaves room for 4096 tenants.
    subid_base: int = 0x7000_0000


@dataclass(frozen=True)
class Daemon:
    # Must stay false: a tenant's containers run under its daemon's own containerd, in
    # the daemon's mount namespace, and stop with it (restart policies bring them back).
    live_restore: bool = False
    # Extra daemon.json keys; dtenant's own keys (bridge, data-root, ...) cannot be set.
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    eligibility: Eligibility = field(default_factory=Eligibility)
    network: Network = field(default_factory=Network)
    hook: Hook = field(default_factory=Hook)
    reap: Reap = field(default_factory=Reap)
    policy: Rules = field(default_factory=Rules)
    limits: Limits = field(default_factory=Limits)
    userns: Userns = field(default_factory=Userns)
    daemon: Daemon = field(default_factory=Daemon)
    files: tuple[str, ...] = ()  # the files this configuration was read from

    def as_dict(self) -> dict[str, Any]:
        """Every section as a table ([policy] is no dataclass: the plugin imports it)."""
        return {**asdict(self), "policy": self.policy.as_dict()}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=list)


SECTIONS: dict[str, type] = {
    "eligibility": Eligibility,
    "network": Network,
    "hook": Hook,
    "reap": Reap,
    "policy": Rules,
    "limits": Limits,
    "userns": Userns,
    "daemon": Daemon,
}


def _parse(text: bytes, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"not valid TOML: {exc}") from None


def _read_in(directory: Path, trust: Trust, only: str | None = None) -> list[tuple[str, bytes]]:
    """(path, content) of file `only`, or of every drop-in (*.toml), in `directory`."""
    fd = trusted.open_directory(str(directory), trust)
    if fd is None:
        return []
    try:
        names = [only] if only else sorted(n for n in os.listdir(fd) if _is_dropin(n))
        read = [(str(directory / n), trusted.read_file(fd, n, str(directory / n), trust))
                for n in names]  # fmt: skip
    finally:
        os.close(fd)
    return [(path, text) for path, text in read if text is not None]


def _is_dropin(name: str) -> bool:
    return name.endswith(".toml") and not name.startswith(".")  # as the hook's *.toml


def _read_trusted(main: Path, dropins: Path, trust: Trust) -> list[tuple[str, dict[str, Any]]]:
    """(file, table) of the main file and every drop-in in name order. A file or directory
    a user could have written refuses the whole configuration (trusted.py says why)."""
    try:
        found = _read_in(main.parent, trust, only=main.name) + _read_in(dropins, trust)
    except trusted.Untrusted as exc:
        raise ConfigError(exc.path, "", f"{exc.problem}: only root may write dtenant's "
                          "configuration, so none of it is used") from None  # fmt: skip
    except OSError as exc:
        raise ConfigError(
            exc.filename or str(dropins), "", f"cannot read: {exc.strerror}"
        ) from None
    return [(file, _parse(text, file)) for file, text in found]


def load(
    main: Path = Path(paths.CONFIG_FILE),
    dropins: Path = Path(paths.CONFIG_DROPINS),
    trust: Trust = trusted.ROOT,
) -> Config:
    files = _read_trusted(main, dropins, trust)
    merged: dict[str, dict[str, tuple[Any, str]]] = {}
    for file, content in files:
        for section, table in content.items():
            if section not in SECTIONS:
                raise ConfigError(file, section, f"unknown section (known: {', '.join(SECTIONS)})")
            if not isinstance(table, dict):
                raise ConfigError(file, section, "must be a table ([section])")
            for key, value in table.items():
                merged.setdefault(section, {})[key] = (value, file)
    sections = {name: _build(name, SECTIONS[name], merged.get(name, {})) for name in SECTIONS}
    config = Config(**sections, files=tuple(file for file, _ in files))
    _check(config, merged)
    _check_daemon_extra(config.daemon.extra, _origin(merged, "daemon", "extra"))
    return config


def section_keys(cls: type) -> tuple[str, ...]:
    """A section's keys in order: a dataclass's fields, policy.Rules' own list."""
    return Rules.FIELDS if cls is Rules else tuple(f.name for f in fields(cls))


def _build(section: str, cls: type, values: dict[str, tuple[Any, str]]) -> Any:
    known = section_keys(cls)
    kwargs: dict[str, Any] = {}
    for key, (value, file) in values.items():
        if key not in known:
            raise ConfigError(file, f"{section}.{key}", f"unknown key (known: {', '.join(known)})")
        default = getattr(cls(), key)
        kwargs[key] = _coerce(value, default, file, f"{section}.{key}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, file: str, key: str) -> Any:
    expected = type(default)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"must be true or false, not {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(file, key, f"must be a number, not {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(file, key, f"must be an integer, not {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(file, key, f"must be a list of strings, not {value!r}")
        return tuple(value)
    if isinstance(default, Mapping):
        if not isinstance(value, dict):
            raise ConfigError(file, key, f"must be a table, not {value!r}")
        return dict(value)
    if not isinstance(value, expected):
        raise ConfigError(file, key, f"must be a {expected.__name__}, not {value!r}")
    return value


def _origin(merged: dict[str, dict[str, tuple[Any, str]]], section: str, key: str) -> str:
    entry = merged.get(section, {}).get(key)
    return entry[1] if entry else "(default)"


def _check(config: Config, merged: dict[str, dict[str, tuple[Any, str]]]) -> None:
    """Cross-field rules; each failure names the key and the file that set it."""
    checks: list[tuple[str, str, Callable[[], str | None]]] = [
        ("eligibility", "min_uid", lambda: _at_least(config.eligibility.min_uid, 1)),
        ("eligibility", "max_uid", lambda: _at_least(
            config.eligibility.max_uid, config.eligibility.min_uid, "min_uid")),
        ("network", "isolation", lambda: None if config.network.isolation in ("strict", "open")
            else f"must be \"strict\" or \"open\", not {config.network.isolation!r}"),
        ("network", "bridge_pool", lambda: _ipv4(config.network.bridge_pool)),
        ("network", "bridge_prefix", lambda: _prefix(
            config.network.bridge_pool, config.network.bridge_prefix, 30)),
        ("network", "networks_pool", lambda: _ipv4(config.network.networks_pool)),
        ("network", "tenant_pool_prefix", lambda: _prefix(
            config.network.networks_pool, config.network.tenant_pool_prefix, 28)),
        ("network", "network_prefix", lambda: None if (
            config.network.tenant_pool_prefix <= config.network.network_prefix <= 30)
            else "must lie between tenant_pool_prefix and 30"),
        ("network", "networks_pool", lambda: _disjoint(
            config.network.networks_pool, config.network.bridge_pool)),
        ("network", "daemon_blocked", lambda: _networks(config.network.daemon_blocked)),
        ("hook", "time_limit", lambda: None if 0 < config.hook.time_limit <= 120
            else "must be more than 0 and at most 120 seconds"),
        ("reap", "interval", lambda: _at_least(config.reap.interval, 10)),
        ("reap", "idle_timeout", lambda: _at_least(config.reap.idle_timeout, 1)),
        ("reap", "stop_running_after", lambda: None if (
            config.reap.stop_running_after == 0
            or config.reap.stop_running_after >= config.reap.idle_timeout)
            else "must be 0 (never) or at least reap.idle_timeout"),
        ("reap", "metrics_file", lambda: None if config.reap.metrics_file == "" or (
            config.reap.metrics_file.startswith("/") and config.reap.metrics_file.endswith(".prom"))
            else "must be \"\" or an absolute path ending in .prom"),
        ("policy", "min_host_port", lambda: None if 1 <= config.policy.min_host_port <= 65535
            else "must be a port number"),
        ("policy", "bind_roots", lambda: _bind_roots(config.policy.bind_roots)),
        ("policy", "max_containers", lambda: _at_least(config.policy.max_containers, 0)),
        ("limits", "memory_max", lambda: _limit(config.limits.memory_max, r"\d+[KMGT]?|\d+%")),
        ("limits", "cpu_quota", lambda: _limit(config.limits.cpu_quota, r"\d+%")),
        ("limits", "tasks_max", lambda: _limit(config.limits.tasks_max, r"\d+|\d+%")),
        ("limits", "disk_max", lambda: _disk_max(config.limits.disk_max)),
        ("userns", "subid_base", lambda: None if 65536 <= config.userns.subid_base
            <= (1 << 31) - 65536 else "must lie between 65536 and 2^31 - 65536"),
        ("daemon", "live_restore", lambda: "must be false: a tenant's containers stop with "
            "its daemon (they run under the daemon's own containerd)"
            if config.daemon.live_restore else None),
    ]  # fmt: skip
    for section, key, check in checks:
        problem = check()
        if problem:
            origin = _origin(merged, section, key)
            if origin == "(default)":  # a default is never the culprit: name what changed
                origin = next((file for _, file in merged.get(section, {}).values()), origin)
            raise ConfigError(origin, f"{section}.{key}", problem)


DISK_MIN = 1 << 30  # below this, a daemon's own files leave a tenant little room
_UNITS = {"M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def disk_bytes(text: str) -> int:
    """limits.disk_max in bytes (0: no cap); ValueError when it is no size (pure)."""
    if not text:
        return 0
    if not re.fullmatch(r"\d+[MGT]", text):
        raise ValueError(text)
    return int(text[:-1]) * _UNITS[text[-1]]


def _disk_max(text: str) -> str | None:
    try:
        size = disk_bytes(text)
    except ValueError:
        return 'must be empty (no cap) or a size such as "20G" (M, G or T)'
    return None if size == 0 or size >= DISK_MIN else "must be at least 1G"


def _at_least(value: int, minimum: int, name: str | None = None) -> str | None:
    if value >= minimum:
        return None
    return f"must be at least {name or minimum}"


def _ipv4(pool: str) -> str | None:
    try:
        ipaddress.IPv4Network(pool)
    except ValueError as exc:
        return f"not an IPv4 network: {exc}"
    return None


def _networks(networks: tuple[str, ...]) -> str | None:
    for network in networks:
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            return f"{network!r} is not an IPv4 or IPv6 network: {exc}"
    return None


def _prefix(pool: str, prefix: int, longest: int) -> str | None:
    try:
        shortest = ipaddress.IPv4Network(pool).prefixlen
    except ValueError:
        return None  # reported for the pool itself
    if not shortest <= prefix <= longest:
        return f"/{prefix} must lie between the pool's /{shortest} and /{longest}"
    return None


def _disjoint(pool: str, other: str) -> str | None:
    if ipaddress.IPv4Network(pool).overlaps(ipaddress.IPv4Network(other)):
        return f"overlaps network.bridge_pool {other}"
    return None


def _bind_roots(roots: tuple[str, ...]) -> str | None:
    for root in roots:
        if not (root.startswith("/") or root.startswith("{home}")):
            return f"{root!r} must be an absolute path or start with {{home}}"
        if root.rstrip("/") in ("", "/etc", "/usr", "/var", "/run", "/proc", "/sys", "/dev"):
            return f"{root!r} would hand the host's system files to every tenant"
    return None


def _limit(value: str, pattern: str) -> str | None:
    if value == "" or re.fullmatch(pattern, value):
        return None
    return f"{value!r} is not a valid systemd limit here"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _count(value: Any) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
    return None if ok else "must be a whole number, 0 or more"


def _strings(value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(item, str) for item in value)
    return None if ok else "must be a list of strings"


def _matching(pattern: str, example: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, str) and re.fullmatch(pattern, value)
        return None if ok else f"must be a string like {example!r}"

    return check


def _table(allowed: Mapping[str, Callable[[Any], str | None]]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return f"must be a table with keys among {', '.join(allowed)}"
        for key, item in value.items():
            if key not in allowed:
                return f"{key!r} is not allowed here (allowed: {', '.join(allowed)})"
            problem = allowed[key](item)
            if problem:
                return f"{key} {problem}"
        return None

    return check


# daemon.extra: dockerd settings that change neither what a container can do to the host
# nor where the daemon keeps or finds things (so no runtimes, hosts, storage, network,
# cgroup, seccomp or user-namespace settings): log verbosity and rotation, pulls and
# pushes, shutdown, containers' DNS, MTU and /dev/shm. dockerd 20.10's names and types.
DAEMON_EXTRA: dict[str, Callable[[Any], str | None]] = {
    "debug": _flag,
    "log-level": _matching(r"debug|info|warn|error|fatal", "info"),
    # For the default json-file driver: rotation only (log-driver itself is not allowed).
    "log-opts": _table({"max-size": _matching(r"\d+[kmg]?", "10m"),
                        "max-file": _matching(r"\d+", "3"),
                        "compress": _matching(r"true|false", "true")}),
    "max-concurrent-downloads": _count,
    "max-concurrent-uploads": _count,
    "max-download-attempts": _count,
    "shutdown-timeout": _count,
    # Where images come from: a tenant may pull from any registry anyway.
    "registry-mirrors": _strings,
    "insecure-registries": _strings,
    "dns": _strings,
    "dns-opts": _strings,
    "dns-search": _strings,
    "mtu": _count,
    "default-shm-size": _matching(r"\d+[bkmgBKMG]?", "64M"),
    "features": _table({"buildkit": _flag}),
}  # fmt: skip
_EXTRA_HINTS = {"live-restore": "; set daemon.live_restore instead"}


def _check_daemon_extra(extra: Mapping[str, Any], file: str) -> None:
    for key, value in extra.items():
        if key not in DAEMON_EXTRA:
            raise ConfigError(
                file,
                f"daemon.extra.{key}",
                "not allowed: daemon.extra takes "
                f"only {', '.join(DAEMON_EXTRA)}{_EXTRA_HINTS.get(key, '')}",
            )
        problem = DAEMON_EXTRA[key](value)
        if problem:
            raise ConfigError(file, f"daemon.extra.{key}", problem)
