from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from dtenant_session import policy

TENANT = policy.Tenant("alice", "/home/alice", "10.128.16.0/20", ("/home/alice", "/scratch/alice"))
RULES = policy.Rules()
LINKS = {"/home/alice/etc-link": "/etc", "/home/alice/ok-link": "/home/alice/data"}


def resolve(path: str) -> str:
    for link, target in LINKS.items():
        if path == link or path.startswith(link + "/"):
            return target + path[len(link) :]
    return path


def request(method: str, uri: str, body: Any = None, raw: bytes | None = None) -> dict[str, Any]:
    req: dict[str, Any] = {"RequestMethod": method, "RequestUri": uri,
                           "RequestHeaders": {"Content-Type": "application/json"}}  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None:
        req["RequestBody"] = base64.b64encode(data).decode()
    return req


# What the fake daemon holds: containers by name, as `docker inspect` shows them.
STORED: dict[str, dict[str, Any]] = {
    "abc": {"Id": "abc", "HostConfig": {"Binds": ["/home/alice/data:/d"], "Privileged": False,
                                        "MaskedPaths": ["/proc/kcore"], "Runtime": "runc"}},
    "plain": {"Id": "plain", "HostConfig": {"Binds": None, "Mounts": [
        {"Type": "volume", "Source": "v", "Target": "/v"}]}},
    # --volumes-from a container with a bind: the bind is a mount point, not in HostConfig
    "inherits": {"Id": "inherits", "HostConfig": {"VolumesFrom": ["abc"]}, "Mounts": [
        {"Type": "bind", "Source": "/home/alice/etc-link", "Destination": "/x"}]},
}  # fmt: skip


def container(name: str) -> bytes:
    if name not in STORED:
        raise OSError("the daemon answered 404")
    return json.dumps(STORED[name]).encode()


COUNT = [3]  # the fake daemon's containers, running or not
LOOKUPS = policy.Lookups(resolve=resolve, container=container, containers=lambda: COUNT[0])


def decide(req: dict[str, Any]) -> tuple[bool, str]:
    return policy.authorize(req, RULES, TENANT, LOOKUPS)


def create(host: dict[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    body = {"Image": "busybox", **config}
    if host is not None:
        body["HostConfig"] = host
    return request("POST", "/v1.41/containers/create?name=x", body)


def denied(req: dict[str, Any], *words: str) -> None:
    allowed, message = decide(req)
    assert not allowed, message
    for word in words:
        assert word in message, message


def test_everyday_requests_are_allowed() -> None:
    for req in [
        create(),
        create({"Binds": ["/home/alice/src:/src:ro", "myvolume:/data"],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "CapAdd": ["NET_ADMIN"], "SecurityOpt": ["no-new-privileges"],
                "Mounts": [{"Type": "tmpfs", "Target": "/tmp"},
                           {"Type": "bind", "Source": "/home/alice/ok-link", "Target": "/x"}],
                "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}}}),
        request("POST", "/v1.41/containers/abc/exec", {"Cmd": ["sh"], "Detach": False}),
        request("POST", "/v1.41/networks/create", {"Name": "n", "IPAM": {"Config": [
            {"Subnet": "10.128.17.0/24"}]}}),
        request("POST", "/v1.41/volumes/create", {"Name": "v"}),
        request("POST", "/v1.41/volumes/create", {"Name": "t", "DriverOpts": {
            "type": "tmpfs", "device": "tmpfs", "o": "size=100m,uid=1000"}}),
        request("POST", "/v1.41/build?t=x&networkmode=default"),
        request("GET", "/v1.41/containers/json"),
        request("DELETE", "/v1.41/images/library/busybox:latest"),
        request("POST", "/v1.41/images/library/busybox/tag?repo=x"),
        request("POST", "/v1.41/containers/abc/start"),
        request("HEAD", "/_ping"),
    ]:  # fmt: skip
        assert decide(req) == (True, ""), req


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ({"Privileged": True}, ["--privileged"]),
        ({"UsernsMode": "host"}, ["--userns=host"]),
        ({"PidMode": "host"}, ["--pid=host"]),
        ({"NetworkMode": "host"}, ["--network=host"]),
        ({"IpcMode": "host"}, ["--ipc=host"]),
        ({"UTSMode": "host"}, ["--uts=host"]),
        ({"CgroupnsMode": "host"}, ["--cgroupns=host"]),
        ({"Binds": ["/:/host"]}, ["bind mount of /"]),
        ({"Binds": ["/etc:/x"]}, ["/etc"]),
        ({"Binds": ["/home/bob:/x"]}, ["/home/bob"]),
        ({"Binds": ["/home/alice/etc-link:/x"]}, ["really /etc"]),
        ({"Binds": ["/home/alice/../bob:/x"]}, ["/home/bob"]),
        ({"Mounts": [{"Type": "bind", "Source": "/var/run", "Target": "/x"}]}, ["/var/run"]),
        ({"Mounts": [{"Type": "volume", "Target": "/x", "VolumeOptions": {"DriverConfig": {
            "Name": "local", "Options": {"type": "none", "o": "bind", "device": "/"}}}}]},
         ["driver options"]),
        ({"CapAdd": ["SYS_ADMIN"]}, ["SYS_ADMIN"]),
        ({"CapAdd": ["ALL"]}, ["ALL"]),
        ({"Devices": [{"PathOnHost": "/dev/sda", "PathInContainer": "/dev/sda",
                       "CgroupPermissions": "rwm"}]}, ["--device"]),
        ({"DeviceCgroupRules": ["b 8:* rmw"]}, ["--device-cgroup-rule"]),
        ({"SecurityOpt": ["seccomp=unconfined"]}, ["seccomp"]),
        ({"SecurityOpt": ["apparmor=unconfined"]}, ["apparmor"]),
        ({"SecurityOpt": ["no-new-privileges=false"]}, ["no-new-privileges"]),
        ({"MaskedPaths": [], "ReadonlyPaths": []}, ["systempaths"]),
        ({"CgroupParent": "/"}, ["--cgroup-parent"]),
        ({"Runtime": "io.containerd.runc.v1"}, ["runtime"]),
        ({"PortBindings": {"22/tcp": [{"HostPort": "22"}]}}, ["port 22"]),
        ({"LogConfig": {"Type": "syslog", "Config": {}}}, ["log driver"]),
        ({"VolumeDriver": "sshfs"}, ["volume driver"]),
        ({"Privileged": "true"}, ["true or false"]),
    ],
)  # fmt: skip
def test_escape_vectors_are_denied(host: dict[str, Any], words: list[str]) -> None:
    denied(create(host), *words)


def test_struct_keys_fold_like_go_and_duplicates_are_denied() -> None:
    lower = {"image": "busybox", "hostconfig": {"privileged": True}}
    denied(request("POST", "/v1.41/containers/create", lower), "--privileged")
    duplicate = b'{"Image": "busybox", "HostConfig": {"Privileged": false, "Privileged": true}}'
    denied(request("POST", "/v1.41/containers/create", raw=duplicate), "duplicate key")
    folded = b'{"Image": "busybox", "HostConfig": {"Privileged": false, "privileged": true}}'
    denied(request("POST", "/v1.41/containers/create", raw=folded), "duplicate key")
    denied(create(Unknown=1), "unknown key")


def test_bodies_the_plugin_cannot_see_are_denied() -> None:
    denied(request("POST", "/v1.41/containers/create"), "without a body")
    denied(request("POST", "/v1.41/containers/create", raw=b"not json"), "not valid JSON")
    denied(request("POST", "/v1.41/containers/create", raw=b"[1]"), "must be an object")
    denied(request("POST", "/v1.41/containers/abc/exec"), "without a body")


def test_paths_are_normalised_like_the_router() -> None:
    denied(request("POST", "//v1.41//containers/./create", {"HostConfig": {"Privileged": True}}),
           "--privileged")  # fmt: skip
    denied(request("POST", "/v1.41/containers%2Fcreate", {"HostConfig": {"Privileged": True}}),
           "--privileged")  # fmt: skip
    denied(request("POST", "/containers/create", {"HostConfig": {"Privileged": True}}),
           "--privileged")  # fmt: skip


@pytest.mark.parametrize(
    ("req", "words"),
    [
        (request("POST", "/v1.41/containers/abc/exec", {"Cmd": ["sh"], "Privileged": True}),
         ["docker exec --privileged"]),
        (request("POST", "/v1.41/plugins/pull?remote=vieux/sshfs", []), ["plugins"]),
        (request("POST", "/v1.41/swarm/init", {}), ["swarm"]),
        (request("POST", "/v1.41/services/create", {}), ["swarm"]),
        (request("POST", "/v1.41/networks/create", {"Name": "m", "Driver": "macvlan",
                                                    "Options": {"parent": "eth0"}}), ["macvlan"]),
        (request("POST", "/v1.41/networks/create", {"Name": "b", "Options": {
            "com.docker.network.bridge.name": "dtenant2"}}), ["bridge.name"]),
        (request("POST", "/v1.41/networks/create", {"Name": "s", "IPAM": {"Config": [
            {"Subnet": "10.96.1.0/24"}]}}), ["outside this tenant's range"]),
        (request("POST", "/v1.41/volumes/create", {"Name": "v", "DriverOpts": {
            "type": "none", "o": "bind", "device": "/"}}), ["driver options"]),
        (request("POST", "/v1.41/volumes/create", {"Name": "v", "Driver": "sshfs"}),
         ["volume driver"]),
        (request("POST", "/v1.41/build?networkmode=host"), ["host network"]),
        (request("POST", "/v1.41/build?cgroupparent=/"), ["cgroup parent"]),
        (request("POST", "/v1.41/containers/abc/update", {"Devices": [{}]}), ["--device"]),
        (request("POST", "/v1.41/containers/abc/start", {"Privileged": True}), ["host config"]),
        (request("POST", "/v1.41/something/new", {}), ["not an endpoint"]),
    ],
)  # fmt: skip
def test_other_endpoints(req: dict[str, Any], words: list[str]) -> None:
    denied(req, *words)


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ({"Binds": ["/home/alice/etc-link/x:/x"]}, ["really /etc/x"]),
        ({"Binds": ["/etc:/x"]}, ["bind mount of /etc"]),
        ({"Mounts": [{"Type": "bind", "Source": "/home/bob", "Target": "/x"}]}, ["/home/bob"]),
        ({"Privileged": True}, ["--privileged"]),
        ({"MaskedPaths": []}, ["systempaths"]),
    ],
)
def test_a_start_checks_the_container_as_stored_now(host: dict[str, Any], words: list[str]) -> None:
    STORED["stale"] = {"Id": "stale", "HostConfig": host}
    allowed, message = decide(request("POST", "/v1.41/containers/stale/start"))
    assert not allowed
    for word in words:
        assert word in message


def test_a_start_of_a_container_that_cannot_be_inspected_is_denied() -> None:
    allowed, message = decide(request("POST", "/v1.41/containers/nosuch/start"))
    assert not allowed and "cannot check container 'nosuch'" in message


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT"])
def test_docker_cp_is_denied_for_containers_with_binds_only(method: str) -> None:
    allowed, message = decide(request(method, "/v1.41/containers/abc/archive?path=/d"))
    assert not allowed and "docker cp is not available" in message
    assert decide(request(method, "/v1.41/containers/plain/archive?path=/v"))[0]


def test_binds_inherited_with_volumes_from_count_at_start_and_for_docker_cp() -> None:
    allowed, message = decide(request("POST", "/v1.41/containers/inherits/start"))
    assert not allowed and "really /etc" in message
    allowed, message = decide(request("GET", "/v1.41/containers/inherits/archive?path=/x"))
    assert not allowed and "docker cp is not available" in message


@pytest.mark.parametrize("version", ["v1.23", "v1.12", "v1.0", "v1.2.3", "v0.9"])
def test_api_versions_before_1_24_are_denied(version: str) -> None:
    for req in (request("GET", f"/{version}/containers/json"),
                request("POST", f"//{version}/containers/abc/start")):  # fmt: skip
        allowed, message = decide(req)
        assert not allowed and "1.24 or later" in message
    assert decide(request("GET", "/v1.24/containers/json"))[0]
    assert decide(request("GET", "/containers/json"))[0]


def test_a_start_with_a_body_the_plugin_cannot_see_is_denied() -> None:
    big = request("POST", "/v1.41/containers/abc/start")
    big["RequestHeaders"]["Content-Length"] = str(2 << 20)
    allowed, message = decide(big)
    assert not allowed and "cannot see" in message


def test_repeated_build_parameters_are_all_checked() -> None:
    allowed, message = decide(request("POST", "/v1.41/build?networkmode=host&networkmode=default"))
    assert not allowed and "--network=host" in message


def unseen(method: str, uri: str, **headers: str) -> dict[str, Any]:
    """A request whose body the daemon did not show the plugin."""
    req = request(method, uri)
    req["RequestHeaders"].update(headers or {"Content-Length": str(2 << 20)})
    return req


@pytest.mark.parametrize(
    "req",
    [
        unseen("POST", "/v1.41/containers/abc/stop"),
        unseen("POST", "/v1.41/containers/abc/kill", **{"Transfer-Encoding": "chunked"}),
        unseen("POST", "/v1.41/containers/abc/start", **{"Transfer-Encoding": "chunked"}),
        unseen("POST", "/v1.41/containers/abc/start", **{"Content-Type": "text/plain",
                                                        "Content-Length": "40"}),
        unseen("POST", "/v1.41/networks/n/connect"),
        unseen("POST", "/v1.41/exec/e1/start"),
        unseen("POST", "/v1.41/commit?container=abc"),
        unseen("DELETE", "/v1.41/containers/abc"),
        unseen("POST", "/v1.41/containers/prune"),
    ],
)  # fmt: skip
def test_a_body_the_plugin_cannot_see_is_denied_wherever_one_could_matter(
    req: dict[str, Any],
) -> None:
    denied(req, "body the plugin can")


@pytest.mark.parametrize(
    "uri",
    ["/v1.41/swarm/unlockkey", "/v1.41/plugins", "/v1.41/containers/abc/checkpoints",
     "/v1.41/services", "/v1.41/something/new", "/v1.41/containers/abc/json/extra"],
)  # fmt: skip
def test_reads_not_on_the_list_are_denied(uri: str) -> None:
    allowed, message = decide(request("GET", uri))
    assert not allowed and ("not an endpoint" in message or "not available" in message)


def test_everyday_reads_are_allowed() -> None:
    for uri in [
        "/_ping",
        "/v1.41/version",
        "/v1.41/info",
        "/v1.41/events?since=1",
        "/v1.41/containers/json?all=1",
        "/v1.41/containers/abc/json",
        "/v1.41/containers/abc/logs?stdout=1",
        "/v1.41/containers/abc/stats",
        "/v1.41/containers/abc/top",
        "/v1.41/images/json",
        "/v1.41/images/registry:5000/a/b:1/json",
        "/v1.41/images/a/b/history",
        "/v1.41/networks",
        "/v1.41/networks/n",
        "/v1.41/volumes",
        "/v1.41/volumes/v",
        "/v1.41/exec/e1/json",
        "/v1.41/system/df",
        "/v1.41/distribution/a/b/json",
    ]:
        assert decide(request("GET", uri)) == (True, ""), uri
    assert decide(request("HEAD", "/_ping")) == (True, "")


def test_a_deeply_nested_body_is_a_clean_denial() -> None:
    deep = b'{"Image": "busybox", "Labels": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    denied(request("POST", "/v1.41/containers/create", raw=deep), "nested too deeply")


@pytest.mark.parametrize(
    ("score", "allowed"),
    [(-1, False), (-1000, False), (0, True), (500, True), ("-5", False), (True, False)],
)
def test_oom_score_below_zero_is_denied(score: Any, allowed: bool) -> None:
    assert decide(create({"OomScoreAdj": score}))[0] is allowed


def test_the_container_cap_is_enforced_at_create() -> None:
    try:
        COUNT[0] = RULES.max_containers
        denied(create(), "policy.max_containers = 100", "docker container prune")
        assert decide(request("POST", "/v1.41/containers/abc/start"))[0]
        COUNT[0] = RULES.max_containers - 1
        assert decide(create())[0]
        unlimited = policy.Rules(max_containers=0)
        COUNT[0] = 10_000
        assert policy.authorize(create(), unlimited, TENANT, LOOKUPS)[0]
    finally:
        COUNT[0] = 3


def test_a_container_count_the_daemon_does_not_give_is_a_denial() -> None:
    def broken() -> int:
        raise OSError("the daemon answered 500")

    look = policy.Lookups(resolve=resolve, container=container, containers=broken)
    allowed, message = policy.authorize(create(), RULES, TENANT, look)
    assert not allowed and "cannot count your containers" in message


@pytest.mark.parametrize(
    ("req", "words"),
    [
        (request("POST", "/v1.41/networks/n/connect",
                 {"Container": "abc", "EndpointConfig": {"DriverOpts": {"x": "1"}}}),
         ["driver options"]),
        (request("POST", "/v1.41/networks/n/connect", {"Container": "abc", "Extra": 1}),
         ["unknown key"]),
        (create(NetworkingConfig={"EndpointsConfig": {"n": {"Surprise": 1}}}), ["unknown key"]),
        (request("POST", "/v1.41/exec/e1/start", {"Detach": False, "Privileged": True}),
         ["unknown key"]),
        (request("POST", "/v1.41/commit?container=abc", {"HostConfig": {"Privileged": True}}),
         ["unknown key"]),
    ],
)  # fmt: skip
def test_every_body_that_carries_settings_is_checked(req: dict[str, Any], words: list[str]) -> None:
    denied(req, *words)


def test_bodies_that_carry_nothing_to_check_pass() -> None:
    for req in [
        request("POST", "/v1.41/networks/n/connect", {"Container": "abc", "EndpointConfig": {
            "Aliases": ["web"], "IPAMConfig": {"IPv4Address": "10.128.17.5"}}}),
        request("POST", "/v1.41/networks/n/disconnect", {"Container": "abc", "Force": True}),
        request("POST", "/v1.41/exec/e1/start", {"Detach": False, "Tty": True}),
        request("POST", "/v1.41/commit?container=abc", {"Cmd": ["sh"], "Env": ["A=1"]}),
        request("POST", "/v1.41/commit?container=abc"),
        unseen("POST", "/v1.41/build?t=x"),  # a context tar: data, not settings
        unseen("POST", "/v1.41/images/load"),
    ]:  # fmt: skip
        assert decide(req) == (True, ""), req


def test_device_requests_follow_the_rule_at_create_as_at_update() -> None:
    gpus = {"DeviceRequests": [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]]}]}
    denied(create(gpus), "--gpus")
    allowing = policy.Rules(allow_device_requests=True)
    assert policy.authorize(create(gpus), allowing, TENANT, LOOKUPS) == (True, "")
    update = request("POST", "/v1.41/containers/abc/update", gpus)
    denied(update, "--gpus")
    assert policy.authorize(update, allowing, TENANT, LOOKUPS) == (True, "")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"Name": "i", "Internal": True}, ["--internal", "iptables"]),
        ({"Name": "c", "Options": {"com.docker.network.bridge.enable_icc": "false"}},
         ["enable_icc=false"]),
        ({"Name": "c", "Options": {"com.docker.network.bridge.enable_icc": "0"}},
         ["enable_icc=0"]),
        ({"Name": "c", "Options": {"com.docker.network.bridge.enable_icc": "maybe"}},
         ["enable_icc=maybe"]),
        ({"Name": "m", "Options": {"com.docker.network.bridge.enable_ip_masquerade": "F"}},
         ["enable_ip_masquerade=F"]),
    ],
)  # fmt: skip
def test_network_semantics_only_iptables_would_carry_out_are_denied(
    body: dict[str, Any], words: list[str]
) -> None:
    denied(request("POST", "/v1.41/networks/create", body), *words)
    bridge = "com.docker.network.bridge"
    on = {"Name": "ok", "Options": {f"{bridge}.enable_icc": "true",
                                    f"{bridge}.enable_ip_masquerade": "1"}}  # fmt: skip
    assert decide(request("POST", "/v1.41/networks/create", on)) == (True, "")


def test_reads_are_decided_once_and_nothing_else_is_remembered() -> None:
    """A read's verdict depends on its method and URI alone: remembered; a write's depends
    on its body and the world: decided every time; old API versions stay refused."""
    reads = policy.KnownReads()
    ps = {"RequestMethod": "GET", "RequestUri": "/v1.41/containers/json"}
    assert policy.authorize(ps, RULES, TENANT, LOOKUPS, reads) == (True, "")
    assert reads.get("GET", "/v1.41/containers/json") == (True, "")
    made = create()
    assert policy.authorize(made, RULES, TENANT, LOOKUPS, reads)[0]
    assert reads.get("POST", made["RequestUri"]) is None
    old = {"RequestMethod": "GET", "RequestUri": "/v1.23/containers/json"}
    assert not policy.authorize(old, RULES, TENANT, LOOKUPS, reads)[0]
    assert not policy.authorize(old, RULES, TENANT, LOOKUPS, reads)[0]
    swarm = {"RequestMethod": "GET", "RequestUri": "/v1.41/swarm"}
    assert not policy.authorize(swarm, RULES, TENANT, LOOKUPS, reads)[0]
    assert reads.get("GET", "/v1.41/swarm") is None
    for index in range(policy.KnownReads.LIMIT + 10):  # bounded, whatever a client sends
        reads.remember("GET", f"/containers/{index}/json", (True, ""))
    assert len(reads._verdicts) == policy.KnownReads.LIMIT
