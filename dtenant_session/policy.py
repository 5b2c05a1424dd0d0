"""The tenant policy: what a user may ask of their own rootful daemon (pure).

Input is Docker's authorization request (RequestMethod, RequestUri, RequestBody in
base64, RequestHeaders); output is (allowed, message). The message reaches the docker
CLI as "authorization denied by plugin dtenant-USER: <message>".

Parsing is at least as strict as the daemon's: Go's encoding/json matches struct fields
case-insensitively and lets the last duplicate win, so struct keys are folded and any
duplicate is denied; map keys (labels, options, ports) keep their case. Unknown keys,
wrong types and bodies the plugin cannot see (chunked, empty, over 1 MiB) are denied
where a body matters. Write endpoints not listed here are denied.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import posixpath
import re
import urllib.parse
from collections.abc import Callable

# typing only for the type checker, and plain slotted classes rather than dataclasses:
# the authorization plugin of every active tenant imports this module, and typing is
# ~0.8 MiB of its memory, dataclasses (with inspect, ast and dis) ~1 MiB (authz.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

Decision = tuple[bool, str]
Resolve = Callable[[str], str]  # host path -> real path, as the daemon would reach it
Inspect = Callable[[str], bytes]  # container name or id -> the daemon's inspect (JSON)
Count = Callable[[], int]  # how many containers the daemon has, running or not


class Lookups:
    """What the policy asks of the world, injected so that it stays pure and testable."""

    __slots__ = ("container", "containers", "resolve")

    def __init__(self, resolve: Resolve, container: Inspect, containers: Count) -> None:
        self.resolve, self.container, self.containers = resolve, container, containers


class Denied(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


DEFAULT_CAPABILITIES = (
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "NET_RAW", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    "NET_ADMIN", "SYS_PTRACE",
)  # fmt: skip


class Rules:
    """The administrator's policy ([policy] in dtenant.toml): config.py reads it, FIELDS
    in the order the shipped file shows them."""

    FIELDS = ("allowed_capabilities", "bind_roots", "min_host_port", "log_drivers",
              "allow_device_requests", "max_containers")  # fmt: skip
    __slots__ = FIELDS

    def __init__(
        self,
        # Docker's default capabilities (adding them changes nothing) and a few that only
        # act inside the container's own namespaces under userns-remap.
        allowed_capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES,
        # Where bind mounts may come from; "{home}" is the user's home, "{user}" the name.
        bind_roots: tuple[str, ...] = ("{home}",),
        min_host_port: int = 1024,
        log_drivers: tuple[str, ...] = ("json-file", "local", "none"),
        allow_device_requests: bool = False,  # --gpus
        # Containers a tenant may have, running or not (0: no cap): each costs a shim, a
        # network endpoint and daemon memory, and the slice's limits bound them only in sum.
        max_containers: int = 100,
    ) -> None:
        self.allowed_capabilities = allowed_capabilities
        self.bind_roots = bind_roots
        self.min_host_port = min_host_port
        self.log_drivers = log_drivers
        self.allow_device_requests = allow_device_requests
        self.max_containers = max_containers

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rules) and self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        return f"Rules({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"


class Tenant:
    __slots__ = ("bind_roots", "home", "networks_pool", "user")

    def __init__(self, user: str, home: str, networks_pool: str,
                 bind_roots: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.user, self.home = user, home
        self.networks_pool = networks_pool  # the tenant's own range for user-defined networks
        self.bind_roots = bind_roots  # resolved, absolute


# -- strict JSON -------------------------------------------------------------------------


class _Pairs(list[tuple[str, object]]):
    """A JSON object as read: its pairs in order, duplicates kept."""


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, object_pairs_hook=_Pairs)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Denied(f"request body is not valid JSON ({exc})") from None
    except RecursionError:
        raise Denied("request body is nested too deeply") from None


def struct(value: Any, where: str, known: frozenset[str]) -> dict[str, Any]:
    """A Go struct: keys folded to lower case, duplicates and unknown fields denied."""
    if value is None:
        return {}
    if not isinstance(value, _Pairs):
        raise Denied(f"{where} must be an object")
    folded: dict[str, Any] = {}
    for key, item in value:
        lower = key.lower()
        if lower in folded:
            raise Denied(f"duplicate key {key!r} in {where}")
        if lower not in known:
            raise Denied(f"unknown key {key!r} in {where}")
        folded[lower] = item
    return folded


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A Go map: keys as written, duplicates denied (Go would keep the last)."""
    if value is None:
        return {}
    if not isinstance(value, _Pairs):
        raise Denied(f"{where} must be an object")
    result: dict[str, Any] = {}
    for key, item in value:
        if key in result:
            raise Denied(f"duplicate key {key!r} in {where}")
        result[key] = item
    return result


def flag(value: Any, where: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    raise Denied(f"{where} must be true or false")


def text(value: Any, where: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise Denied(f"{where} must be a string")


def texts(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Denied(f"{where} must be a list of strings")
    return value


def items(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise Denied(f"{where} must be a list")
    return value


def _fields(names: str) -> frozenset[str]:
    return frozenset(name.lower() for name in names.split())


CONFIG_FIELDS = _fields("""
    Hostname Domainname User AttachStdin AttachStdout AttachStderr ExposedPorts Tty OpenStdin
    StdinOnce Env Cmd Healthcheck ArgsEscaped Image Volumes WorkingDir Entrypoint
    NetworkDisabled MacAddress OnBuild Labels StopSignal StopTimeout Shell
    HostConfig NetworkingConfig""")
RESOURCE_FIELDS = _fields("""
    CpuShares Memory NanoCpus CgroupParent BlkioWeight BlkioWeightDevice BlkioDeviceReadBps
    BlkioDeviceWriteBps BlkioDeviceReadIOps BlkioDeviceWriteIOps CpuPeriod CpuQuota
    CpuRealtimePeriod CpuRealtimeRuntime CpusetCpus CpusetMems Devices DeviceCgroupRules
    DeviceRequests KernelMemory KernelMemoryTCP MemoryReservation MemorySwap
    MemorySwappiness OomKillDisable PidsLimit Ulimits CpuCount CpuPercent IOMaximumIOps
    IOMaximumBandwidth""")
HOST_CONFIG_FIELDS = RESOURCE_FIELDS | _fields("""
    Binds ContainerIDFile LogConfig NetworkMode PortBindings RestartPolicy AutoRemove
    VolumeDriver VolumesFrom Mounts CapAdd CapDrop CgroupnsMode Dns DnsOptions DnsSearch
    ExtraHosts GroupAdd IpcMode Cgroup Links OomScoreAdj PidMode Privileged PublishAllPorts
    ReadonlyRootfs SecurityOpt StorageOpt Tmpfs UTSMode UsernsMode ShmSize Sysctls Runtime
    ConsoleSize Isolation MaskedPaths ReadonlyPaths Init Annotations""")
UPDATE_FIELDS = RESOURCE_FIELDS | _fields("RestartPolicy")
MOUNT_FIELDS = _fields(
    "Type Source Target ReadOnly Consistency BindOptions VolumeOptions TmpfsOptions"
)
BIND_OPTION_FIELDS = _fields("Propagation NonRecursive CreateMountpoint")
VOLUME_OPTION_FIELDS = _fields("NoCopy Labels DriverConfig")
DRIVER_CONFIG_FIELDS = _fields("Name Options")
TMPFS_OPTION_FIELDS = _fields("SizeBytes Mode")
LOG_CONFIG_FIELDS = _fields("Type Config")
PORT_BINDING_FIELDS = _fields("HostIp HostPort")
EXEC_FIELDS = _fields("""
    AttachStdin AttachStdout AttachStderr Detach DetachKeys Tty Env Cmd Privileged User WorkingDir
    ConsoleSize""")
NETWORK_FIELDS = _fields("""
    Name CheckDuplicate Driver Scope EnableIPv6 IPAM Internal Attachable Ingress ConfigOnly
    ConfigFrom Options Labels""")
IPAM_FIELDS = _fields("Driver Config Options")
IPAM_CONFIG_FIELDS = _fields("Subnet IPRange Gateway AuxiliaryAddresses")
NETWORKING_FIELDS = _fields("EndpointsConfig")
# As clients up to API 1.48 send them (GwPriority, DNSNames: newer than the daemon, which
# ignores them; neither reaches beyond the tenant's own networks).
ENDPOINT_FIELDS = _fields("""
    IPAMConfig Links Aliases NetworkID EndpointID Gateway IPAddress IPPrefixLen IPv6Gateway
    GlobalIPv6Address GlobalIPv6PrefixLen MacAddress DriverOpts GwPriority DNSNames""")
NETWORK_ATTACH_FIELDS = _fields("Container EndpointConfig Force")
EXEC_START_FIELDS = _fields("Detach Tty ConsoleSize")
COMMIT_FIELDS = CONFIG_FIELDS - _fields("HostConfig NetworkingConfig")
VOLUME_FIELDS = _fields("Name Driver DriverOpts Labels")

# Network options that only tune the tenant's own bridge network.
NETWORK_OPTIONS = frozenset({
    "com.docker.network.driver.mtu", "com.docker.network.bridge.enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade",
    "com.docker.network.bridge.host_binding_ipv4",
    "com.docker.network.container_iface_prefix",
})  # fmt: skip
# Bridge options whose "false" only Docker's iptables rules would carry out.
IPTABLES_OPTIONS = {
    "com.docker.network.bridge.enable_icc": "isolate the containers of such a network",
    "com.docker.network.bridge.enable_ip_masquerade": "leave a network's traffic unmasqueraded",
}
GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # strconv.ParseBool's true
TMPFS_VOLUME_OPTIONS = re.compile(
    r"^(size=\d+[kmgKMG%]?|nr_inodes=\d+[kmgKMG]?|mode=[0-7]{3,4}|uid=\d+|gid=\d+|"
    r"noexec|nosuid|nodev|ro|rw)$"
)
NAMESPACE_MODES = {  # HostConfig key -> what the CLI flag is called
    "pidmode": "--pid", "networkmode": "--network", "ipcmode": "--ipc", "utsmode": "--uts",
    "cgroupnsmode": "--cgroupns", "usernsmode": "--userns",
}  # fmt: skip

# -- the request --------------------------------------------------------------------------

_VERSION = re.compile(r"^/v[0-9][0-9.]*(?=/)")
_VERSION_NUMBER = re.compile(r"^/v([0-9][0-9.]*)/")


def _api_version(path: str) -> None:
    """API versions older than 1.24 are refused: old semantics are old attack surface."""
    match = _VERSION_NUMBER.match(path)
    if not match:
        return  # the daemon's own current version
    try:
        version = tuple(int(part) for part in match.group(1).split(".") if part)
    except ValueError:
        raise Denied(f"API version {match.group(1)!r} is not a version") from None
    if version < OLDEST_API:
        raise Denied(f"API version {match.group(1)} is not allowed (1.24 or later)")


SEEN = "(a body the plugin sees: JSON, under 1 MiB, with its length)"


def _unseen_body(request: dict[str, Any]) -> bool:
    """A body the daemon got but did not show the plugin (over 1 MiB, or of unknown size)."""
    if request.get("RequestBody"):
        return False
    headers = request.get("RequestHeaders")
    if not isinstance(headers, dict):
        return False
    folded = {str(k).lower(): str(v) for k, v in headers.items()}
    length = folded.get("content-length", "0").strip()
    return "transfer-encoding" in folded or not length.isdigit() or int(length) > 0


def _split(uri: str) -> tuple[str, str]:
    """(path, query) of a request URI as Go's server reads it (url.ParseRequestURI): a
    leading "//" starts a path, not a host, and "#" is part of the path."""
    path, _, query = uri.partition("?")
    # normpath keeps a leading "//" (POSIX allows it a meaning); the router does not.
    return posixpath.normpath("/" + urllib.parse.unquote(path).lstrip("/")), query


def normalise(uri: str) -> tuple[str, dict[str, list[str]]]:
    """(path, query) the way Docker's router sees them: decoded, cleaned, unversioned."""
    path, query = _split(uri)
    return _unversioned(path), _parameters(query)


def _unversioned(path: str) -> str:
    return _VERSION.sub("", path, count=1)


def _parameters(query: str) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(query, keep_blank_values=True) if query else {}


def _body(request: dict[str, Any], endpoint: str) -> Any:
    encoded = request.get("RequestBody")
    if not encoded:
        raise Denied(f"{endpoint} without a body the plugin can read (empty, chunked, not "
                     "JSON or over 1 MiB)")  # fmt: skip
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (ValueError, TypeError):
        raise Denied("request body is not valid base64") from None
    return parse_json(raw)


OLDEST_API = (1, 24)  # below it, dockerd still applies a HostConfig sent at container start


class Ask:
    """One request, as the router sees it, and what it is checked against."""

    __slots__ = ("look", "method", "path", "query", "request", "rules", "tenant")

    def __init__(self, request: dict[str, Any], method: str, path: str,
                 query: dict[str, list[str]], rules: Rules, tenant: Tenant,
                 look: Lookups) -> None:  # fmt: skip
        self.request = request  # Docker's authorization request
        self.method = method
        self.path = path  # normalised, unversioned
        self.query = query
        self.rules, self.tenant, self.look = rules, tenant, look


Checker = Callable[[Ask], None]


class KnownReads:
    """Verdicts on reads, which depend on the method and the URI alone (`_read`): the
    hundreds of polls of a client are decided once. Bounded; it belongs to one policy and
    goes with it when the configuration changes."""

    LIMIT = 4096

    def __init__(self) -> None:
        self._verdicts: dict[tuple[str, str], Decision] = {}

    def get(self, method: str, uri: str) -> Decision | None:
        return self._verdicts.get((method, uri))

    def remember(self, method: str, uri: str, decision: Decision) -> None:
        if len(self._verdicts) < self.LIMIT:
            self._verdicts[(method, uri)] = decision


def authorize(request: dict[str, Any], rules: Rules, tenant: Tenant, look: Lookups,
              reads: KnownReads | None = None) -> Decision:  # fmt: skip
    method = str(request.get("RequestMethod", "")).upper()
    uri = str(request.get("RequestUri", ""))
    if reads is not None and (known := reads.get(method, uri)) is not None:
        return known
    try:
        path, query = _split(uri)
        _api_version(path)
        checker = _check(Ask(request, method, _unversioned(path), _parameters(query), rules,
                             tenant, look))  # fmt: skip
    except Denied as denied:
        return False, f"dtenant: {denied.reason}"
    if reads is not None and checker is _read:
        reads.remember(method, uri, ALLOWED)
    return ALLOWED


ALLOWED: Decision = (True, "")


def _check(ask: Ask) -> Checker:
    """The checker that passed the request (Denied when none does)."""
    method, path = ask.method, ask.path
    for pattern, methods, checker in ENDPOINTS:
        if method in methods and pattern.match(path):
            checker(ask)
            return checker
    for prefix, what in FORBIDDEN:
        if path == prefix or path.startswith(prefix + "/"):
            raise Denied(f"{what} is not available to tenants")
    raise Denied(f"{method} {path} is not an endpoint tenants may use")


# -- containers ---------------------------------------------------------------------------


def _container_create(ask: Ask) -> None:
    body = struct(_body(ask.request, "container create"), "the container config", CONFIG_FIELDS)
    host = struct(body.get("hostconfig"), "HostConfig", HOST_CONFIG_FIELDS)
    _host_config(host, ask.rules, ask.tenant, ask.look.resolve)
    networking = struct(body.get("networkingconfig"), "NetworkingConfig", NETWORKING_FIELDS)
    for name, endpoint in mapping(networking.get("endpointsconfig"), "EndpointsConfig").items():
        if name == "host":
            raise Denied("the host network (--network=host) is not allowed")
        _endpoint(struct(endpoint, f"EndpointsConfig[{name}]", ENDPOINT_FIELDS))
    _container_cap(ask.rules, ask.look)


def _endpoint(endpoint: dict[str, Any]) -> None:
    if mapping(endpoint.get("driveropts"), "EndpointConfig.DriverOpts"):
        raise Denied("endpoint driver options are not allowed")


def _container_cap(rules: Rules, look: Lookups) -> None:
    if not rules.max_containers:
        return
    try:
        count = look.containers()
    except OSError as exc:
        raise Denied(f"cannot count your containers ({exc})") from None
    if count >= rules.max_containers:
        raise Denied(f"you have {count} containers, the most this host allows "
                     f"(policy.max_containers = {rules.max_containers}): remove some "
                     "(docker container prune)")  # fmt: skip


def _host_config(host: dict[str, Any], rules: Rules, tenant: Tenant, resolve: Resolve) -> None:
    if flag(host.get("privileged"), "Privileged"):
        raise Denied("privileged containers (--privileged) are not allowed")
    for key, option in NAMESPACE_MODES.items():
        if text(host.get(key), key) == "host":
            raise Denied(f"the host's namespace ({option}=host) is not allowed")
    if text(host.get("cgroup"), "Cgroup") and not text(host.get("cgroup"), "Cgroup").startswith(
        "container:"
    ):
        raise Denied("joining a cgroup other than a container's is not allowed")
    _resources(host, rules)
    for entry in texts(host.get("binds"), "Binds"):
        _bind_entry(entry, tenant, resolve)
    for index, mount in enumerate(items(host.get("mounts"), "Mounts")):
        _mount(struct(mount, f"Mounts[{index}]", MOUNT_FIELDS), tenant, resolve)
    driver = text(host.get("volumedriver"), "VolumeDriver")
    if driver not in ("", "local"):
        raise Denied(f"volume driver {driver!r} is not allowed (only local)")
    _capabilities(texts(host.get("capadd"), "CapAdd"), rules)
    _security_options(texts(host.get("securityopt"), "SecurityOpt"))
    for key, option in (("maskedpaths", "MaskedPaths"), ("readonlypaths", "ReadonlyPaths")):
        if host.get(key) is not None:
            raise Denied(f"changing {option} (--security-opt systempaths=unconfined) is not "
                         "allowed")  # fmt: skip
    runtime = text(host.get("runtime"), "Runtime")
    if runtime not in ("", "runc"):
        raise Denied(f"runtime {runtime!r} is not allowed")
    isolation = text(host.get("isolation"), "Isolation")
    if isolation not in ("", "default"):
        raise Denied(f"isolation {isolation!r} is not allowed")
    _ports(mapping(host.get("portbindings"), "PortBindings"), rules)
    log = struct(host.get("logconfig"), "LogConfig", LOG_CONFIG_FIELDS)
    mapping(log.get("config"), "LogConfig.Config")
    log_driver = text(log.get("type"), "LogConfig.Type")
    if log_driver and log_driver not in rules.log_drivers:
        raise Denied(f"log driver {log_driver!r} is not allowed (allowed: "
                     f"{', '.join(rules.log_drivers)})")  # fmt: skip


def _resources(resources: dict[str, Any], rules: Rules) -> None:
    if items(resources.get("devices"), "Devices"):
        raise Denied("host devices (--device) are not allowed")
    if texts(resources.get("devicecgrouprules"), "DeviceCgroupRules"):
        raise Denied("device cgroup rules (--device-cgroup-rule) are not allowed")
    if items(resources.get("devicerequests"), "DeviceRequests") and not rules.allow_device_requests:
        raise Denied("device requests (--gpus) are not allowed")
    if text(resources.get("cgroupparent"), "CgroupParent"):
        raise Denied("choosing the cgroup parent (--cgroup-parent) is not allowed")
    if flag(resources.get("oomkilldisable"), "OomKillDisable"):
        raise Denied("disabling the OOM killer (--oom-kill-disable) is not allowed")
    score = resources.get("oomscoreadj")
    if score is not None and (not isinstance(score, int) or isinstance(score, bool)):
        raise Denied("OomScoreAdj must be a number")
    if score is not None and score < 0:
        # Below 0 the host's OOM killer would spare the container and kill the host's
        # own processes instead.
        raise Denied(f"--oom-score-adj {score} is not allowed (0 or more)")


def _capabilities(added: list[str], rules: Rules) -> None:
    allowed = {c.upper() for c in rules.allowed_capabilities}
    for capability in added:
        name = capability.upper().removeprefix("CAP_")
        if name == "ALL" or name not in allowed:
            raise Denied(f"capability {capability} (--cap-add) is not allowed")


def _security_options(options: list[str]) -> None:
    for option in options:
        key, _, value = option.replace(":", "=", 1).partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "no-new-privileges" and value in ("", "true"):
            continue
        raise Denied(f"security option {option!r} is not allowed")


def _ports(bindings: dict[str, Any], rules: Rules) -> None:
    for port, hosts in bindings.items():
        for index, binding in enumerate(items(hosts, f"PortBindings[{port}]")):
            host = struct(binding, f"PortBindings[{port}][{index}]", PORT_BINDING_FIELDS)
            host_port = text(host.get("hostport"), "HostPort")
            if not host_port:
                continue  # a port of the daemon's choosing: ephemeral
            low = host_port.split("-", 1)[0]
            if not low.isdigit():
                raise Denied(f"host port {host_port!r} is not a number")
            if int(low) < rules.min_host_port:
                raise Denied(f"publishing host port {host_port} is not allowed: ports below "
                             f"{rules.min_host_port} belong to the host")  # fmt: skip


def _bind_entry(entry: str, tenant: Tenant, resolve: Resolve) -> None:
    source = entry.split(":", 1)[0]
    if source.startswith("/"):
        _bind_source(source, tenant, resolve)
    elif not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]+", source):
        raise Denied(f"bind {entry!r}: a volume name or an absolute path is needed")


def _bind_source(source: str, tenant: Tenant, resolve: Resolve) -> None:
    if not source.startswith("/"):
        raise Denied(f"bind source {source!r} must be an absolute path")
    try:
        # Cleaned first, as Docker cleans it: "/home/alice/../bob" is /home/bob.
        real = resolve(posixpath.normpath(source))
    except OSError as exc:
        raise Denied(f"bind source {source}: cannot be resolved ({exc.strerror})") from None
    for root in tenant.bind_roots:
        if real == root or real.startswith(root.rstrip("/") + "/"):
            return
    shown = source if real == source else f"{source} (really {real})"
    raise Denied(f"bind mount of {shown} is not allowed: only paths under "
                 f"{', '.join(tenant.bind_roots)}")  # fmt: skip


def _mount(mount: dict[str, Any], tenant: Tenant, resolve: Resolve) -> None:
    kind = text(mount.get("type"), "Mount.Type")
    if kind == "bind":
        _bind_source(text(mount.get("source"), "Mount.Source"), tenant, resolve)
        options = struct(mount.get("bindoptions"), "BindOptions", BIND_OPTION_FIELDS)
        propagation = text(options.get("propagation"), "Propagation")
        if propagation in ("shared", "rshared"):
            raise Denied(f"bind propagation {propagation!r} is not allowed")
    elif kind == "volume":
        volume = struct(mount.get("volumeoptions"), "VolumeOptions", VOLUME_OPTION_FIELDS)
        driver = struct(volume.get("driverconfig"), "DriverConfig", DRIVER_CONFIG_FIELDS)
        _volume_driver(text(driver.get("name"), "DriverConfig.Name"),
                       mapping(driver.get("options"), "DriverConfig.Options"))  # fmt: skip
    elif kind == "tmpfs":
        struct(mount.get("tmpfsoptions"), "TmpfsOptions", TMPFS_OPTION_FIELDS)
    else:
        raise Denied(f"mount type {kind!r} is not allowed")


def _container_update(ask: Ask) -> None:
    update = struct(_body(ask.request, "container update"), "the update", UPDATE_FIELDS)
    _resources(update, ask.rules)


def _container_start(ask: Ask) -> None:
    request, tenant, look = ask.request, ask.tenant, ask.look
    if _unseen_body(request):
        raise Denied(f"a container start with a body the plugin cannot see is not allowed {SEEN}")
    if request.get("RequestBody") and _body(request, "container start") not in (None, _Pairs()):
        raise Denied("a host config at container start is not allowed")
    # Docker uses bind sources at start (it creates a missing -v source, as root): the
    # container as stored is checked again, against the paths and the rules of now, with
    # every mount it has (binds it inherits with --volumes-from included).
    inspected = _inspected(ask)
    _stored_host_config(_host_of(inspected), ask.rules, tenant, look.resolve)
    for source in _bind_sources(inspected):
        _bind_source(source, tenant, look.resolve)


def _container_archive(ask: Ask) -> None:
    """docker cp: the daemon mounts the container's binds itself, as root, following
    whatever their sources have become, and writes what the archive holds (device nodes
    too); a container with binds has its files in the user's own directories anyway."""
    if _bind_sources(_inspected(ask)):
        raise Denied("docker cp is not available for containers with bind mounts: copy "
                     "the files in your own directories instead")  # fmt: skip


def _inspected(ask: Ask) -> dict[str, Any]:
    """The daemon's inspect of the container the request names, keys folded."""
    name = ask.path.split("/")[2]
    try:
        inspected = parse_json(ask.look.container(name))
    except OSError as exc:
        raise Denied(f"cannot check container {name!r} ({exc})") from None
    return folded(inspected, "the container")


def _host_of(inspected: dict[str, Any]) -> dict[str, Any]:
    return folded(inspected.get("hostconfig"), "HostConfig")


def _bind_sources(inspected: dict[str, Any]) -> list[str]:
    """Host paths the container binds: its own and those of --volumes-from (the daemon's
    mount points), and its HostConfig's."""
    host = _host_of(inspected)
    sources = [e.split(":", 1)[0] for e in texts(host.get("binds"), "Binds") if e.startswith("/")]
    for index, entry in enumerate(items(inspected.get("mounts"), "Mounts")):
        point = folded(entry, f"Mounts[{index}]")
        if text(point.get("type"), "Mount.Type") == "bind":
            sources.append(text(point.get("source"), "Mount.Source"))
    for index, entry in enumerate(items(host.get("mounts"), "HostConfig.Mounts")):
        mount = folded(entry, f"HostConfig.Mounts[{index}]")
        if text(mount.get("type"), "Mount.Type") == "bind":
            sources.append(text(mount.get("source"), "Mount.Source"))
    return sources


def folded(value: Any, where: str) -> dict[str, Any]:
    """An object the daemon wrote: keys folded to lower case, any key allowed."""
    if value is None:
        return {}
    if not isinstance(value, _Pairs):
        raise Denied(f"{where} must be an object")
    return {key.lower(): item for key, item in value}


def _stored_host_config(stored: dict[str, Any], rules: Rules, tenant: Tenant,
                        resolve: Resolve) -> None:  # fmt: skip
    """A host config as the daemon stored it: the rules of create, where the daemon's own
    defaults (fields it fills in, default masked paths) are not the tenant's doing."""
    known = {key: value for key, value in stored.items() if key in HOST_CONFIG_FIELDS}
    for key, option in (("maskedpaths", "MaskedPaths"), ("readonlypaths", "ReadonlyPaths")):
        if known.pop(key, None) == []:
            raise Denied(f"changing {option} (--security-opt systempaths=unconfined) is not "
                         "allowed")  # fmt: skip
    _host_config(known, rules, tenant, resolve)


def _exec_create(ask: Ask) -> None:
    body = struct(_body(ask.request, "exec create"), "the exec config", EXEC_FIELDS)
    if flag(body.get("privileged"), "Privileged"):
        raise Denied("privileged exec (docker exec --privileged) is not allowed")


# -- volumes, networks, builds ----------------------------------------------------------------


def _volume_driver(driver: str, options: dict[str, Any]) -> None:
    if driver not in ("", "local"):
        raise Denied(f"volume driver {driver!r} is not allowed (only local)")
    if not options:
        return
    kind, device, mount_options = (str(options.get(k, "")) for k in ("type", "device", "o"))
    unknown = set(options) - {"type", "device", "o"}
    safe = (
        not unknown and kind == "tmpfs" and device in ("", "tmpfs")
        and all(TMPFS_VOLUME_OPTIONS.match(o) for o in mount_options.split(",") if o)
    )  # fmt: skip
    if not safe:
        shown = ",".join(f"{k}={v}" for k, v in options.items())
        raise Denied(f"volume driver options {shown} are not allowed: the daemon would mount "
                     "host paths or devices (only type=tmpfs volumes may be tuned)")  # fmt: skip


def _volume_create(ask: Ask) -> None:
    body = struct(_body(ask.request, "volume create"), "the volume config", VOLUME_FIELDS)
    _volume_driver(
        text(body.get("driver"), "Driver"), mapping(body.get("driveropts"), "DriverOpts")
    )


def _network_create(ask: Ask) -> None:
    body = struct(_body(ask.request, "network create"), "the network config", NETWORK_FIELDS)
    driver = text(body.get("driver"), "Driver")
    if driver not in ("", "bridge"):
        raise Denied(f"network driver {driver!r} is not allowed (only bridge)")
    if text(body.get("scope"), "Scope") not in ("", "local"):
        raise Denied("swarm-scoped networks are not allowed")
    if flag(body.get("ingress"), "Ingress"):
        raise Denied("ingress networks are not allowed")
    if flag(body.get("enableipv6"), "EnableIPv6"):
        raise Denied("IPv6 networks are not supported for tenants")
    if flag(body.get("internal"), "Internal"):
        raise Denied("internal networks (--internal) are not available: tenant daemons run "
                     "without Docker's iptables rules, which alone keep such a network from "
                     "the host, the outside and the upstream DNS resolver")  # fmt: skip
    _network_options(mapping(body.get("options"), "Options"))
    _ipam(struct(body.get("ipam"), "IPAM", IPAM_FIELDS), ask.tenant)


def _network_options(options: dict[str, Any]) -> None:
    for key, value in options.items():
        if key not in NETWORK_OPTIONS:
            raise Denied(f"network option {key!r} is not allowed (a bridge name or parent "
                         "interface of its own would reach beyond the tenant)")  # fmt: skip
        if key in IPTABLES_OPTIONS and value not in GO_TRUE:
            raise Denied(f"network option {key}={value} is not available: tenant daemons "
                         "run without Docker's iptables rules, which alone "
                         f"{IPTABLES_OPTIONS[key]}")  # fmt: skip


def _ipam(ipam: dict[str, Any], tenant: Tenant) -> None:
    if text(ipam.get("driver"), "IPAM.Driver") not in ("", "default"):
        raise Denied("IPAM drivers other than default are not allowed")
    pool = ipaddress.ip_network(tenant.networks_pool)
    for index, entry in enumerate(items(ipam.get("config"), "IPAM.Config")):
        config = struct(entry, f"IPAM.Config[{index}]", IPAM_CONFIG_FIELDS)
        for key in ("subnet", "iprange"):
            value = text(config.get(key), key)
            if not value:
                continue
            try:
                network = ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise Denied(f"{key} {value!r} is not a network") from None
            if network.version != pool.version or not network.subnet_of(pool):  # type: ignore[arg-type]
                raise Denied(f"subnet {value} is outside this tenant's range {pool}")


def _build(ask: Ask) -> None:
    query = ask.query
    # Every value: Go's FormValue takes the first of repeated keys, Python's parse the last.
    if "host" in query.get("networkmode", []):
        raise Denied("builds with the host network (--network=host) are not allowed")
    if any(query.get("cgroupparent", [])):
        raise Denied("choosing the cgroup parent of a build is not allowed")
    isolation = [value for value in query.get("isolation", []) if value not in ("", "default")]
    if isolation:
        raise Denied(f"build isolation {isolation[0]!r} is not allowed")


def _no_body(ask: Ask) -> None:
    """Endpoints that read no body: a body the plugin cannot see is someone's trick."""
    if _unseen_body(ask.request):
        raise Denied(f"a body the plugin cannot see is not allowed here {SEEN}")


def _streamed(_ask: Ask) -> None:
    """Endpoints whose body is data the daemon stores or streams (a tar, a hijacked
    connection, credentials), never settings; what they fetch is bounded by the network
    (the daemon's own traffic is filtered)."""


def _read(_ask: Ask) -> None:
    """Reads of the tenant's own objects."""


def _exec_start(ask: Ask) -> None:
    struct(_body(ask.request, "exec start"), "the exec start", EXEC_START_FIELDS)


def _commit(ask: Ask) -> None:
    """The committed image's config (Cmd, Env, ...); no host settings can ride along."""
    request = ask.request
    if _unseen_body(request):
        raise Denied(f"a commit with a body the plugin cannot see is not allowed {SEEN}")
    if request.get("RequestBody"):
        struct(_body(request, "commit"), "the image config", COMMIT_FIELDS)


def _network_attach(ask: Ask) -> None:
    body = struct(_body(ask.request, "network connect"), "the request", NETWORK_ATTACH_FIELDS)
    _endpoint(struct(body.get("endpointconfig"), "EndpointConfig", ENDPOINT_FIELDS))


def _p(pattern: str) -> re.Pattern[str]:
    return re.compile(f"^{pattern}$")


WRITE, DELETE = frozenset({"POST", "PUT"}), frozenset({"DELETE"})
READ = frozenset({"GET", "HEAD"})
CONTAINER, IMAGE = "/containers/[^/]+", "/images/.+"
# Every endpoint a tenant may use, with what it checks; everything else is denied.
ENDPOINTS: list[tuple[re.Pattern[str], frozenset[str], Checker]] = [
    (_p("/containers/create"), WRITE, _container_create),
    (_p(f"{CONTAINER}/update"), WRITE, _container_update),
    (_p(f"{CONTAINER}/start"), WRITE, _container_start),
    (_p(f"{CONTAINER}/exec"), WRITE, _exec_create),
    (_p(f"{CONTAINER}/(stop|restart|kill|pause|unpause|rename|resize|wait)"), WRITE, _no_body),
    (_p(f"{CONTAINER}/attach"), WRITE, _streamed),
    (_p(f"{CONTAINER}/archive"), WRITE | READ, _container_archive),
    (_p("/containers/prune"), WRITE, _no_body),
    (_p(CONTAINER), DELETE, _no_body),
    (_p("/exec/[^/]+/start"), WRITE, _exec_start),
    (_p("/exec/[^/]+/resize"), WRITE, _no_body),
    (_p("/images/(create|load)"), WRITE, _streamed),
    (_p("/images/prune"), WRITE, _no_body),
    (_p(f"{IMAGE}/(push|tag)"), WRITE, _no_body),
    (_p(IMAGE), DELETE, _no_body),
    (_p("/commit"), WRITE, _commit),
    (_p("/build"), WRITE, _build),
    (_p("/build/(prune|cancel)"), WRITE, _no_body),
    (_p("/volumes/create"), WRITE, _volume_create),
    (_p("/volumes/prune"), WRITE, _no_body),
    (_p("/volumes/[^/]+"), DELETE, _no_body),
    (_p("/networks/create"), WRITE, _network_create),
    (_p("/networks/[^/]+/(connect|disconnect)"), WRITE, _network_attach),
    (_p("/networks/prune"), WRITE, _no_body),
    (_p("/networks/[^/]+"), DELETE, _no_body),
    (_p("/(session|grpc|auth)"), WRITE, _streamed),
    (_p("/(_ping|version|info|events|system/df)"), READ, _read),
    (_p("/containers/json"), READ, _read),
    (_p(f"{CONTAINER}/(json|top|logs|stats|changes|export|attach/ws)"), READ, _read),
    (_p("/exec/[^/]+/json"), READ, _read),
    (_p("/images/(json|search|get)"), READ, _read),
    (_p(f"{IMAGE}/(json|history|get)"), READ, _read),
    (_p("/networks"), READ, _read),
    (_p("/networks/[^/]+"), READ, _read),
    (_p("/volumes"), READ, _read),
    (_p("/volumes/[^/]+"), READ, _read),
    (_p("/distribution/.+/json"), READ, _read),
]  # fmt: skip
FORBIDDEN = [
    ("/plugins", "managing plugins"),
    ("/swarm", "swarm mode"), ("/services", "swarm mode"), ("/nodes", "swarm mode"),
    ("/secrets", "swarm mode"), ("/configs", "swarm mode"), ("/tasks", "swarm mode"),
]  # fmt: skip
