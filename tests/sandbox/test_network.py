"""The network keeps Docker's promises without Docker's iptables rules (issue 12):
spoofed sources reach no other tenant, nothing reaches a container from outside except
through a published port (with and without a system docker.service), and --internal,
enable_icc=false and 127.0.0.1 ports hold or are denied."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dtenant_session import command
from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import CHECKOUT, OUTSIDE

IMAGE = testimage.IMAGE
UPLINK = "198.51.100.1"  # the lab host, as the outside namespace sees it
NOWHERE = "203.0.113.7"  # a source address in no tenant's range and on no link
BLOCKED = "blocked"
TOOLS = "/home/bob/tools"  # rawsend, bind-mounted into bob's containers


def _fetch(lab: host.Lab, where: str, url: str) -> str:
    """The page at url fetched by `where` (a shell prefix running busybox); BLOCKED when
    nothing answers (dropped) or the connection is refused."""
    result = lab.sh(f"{where} timeout 3 busybox wget -qO- {url}; echo rc=$?", check=False)
    page, _, code = result.stdout.strip().rpartition("rc=")
    return page.strip() if code == "0" else BLOCKED


def _from_outside(lab: host.Lab, url: str) -> str:
    return _fetch(lab, "ip netns exec outside", url)


def _in_container(lab: host.Lab, user: str, flags: str, script: str) -> str:
    """What `script` prints in a new container of `user` (its exit status appended)."""
    remote = f"docker run --rm -i {flags} {IMAGE} sh -s"
    return lab.ssh(user, remote, input=f"{script}\necho rc=$?\n").stdout


def _fetch_in_container(lab: host.Lab, user: str, flags: str, url: str) -> str:
    out = _in_container(lab, user, flags, f"timeout 3 wget -qO- {url}").strip()
    page, _, code = out.rpartition("rc=")
    return page.strip() if code == "0" else BLOCKED


def _address(lab: host.Lab, user: str, container: str, network: str = "bridge") -> str:
    template = f"{{{{.NetworkSettings.Networks.{network}.IPAddress}}}}"
    return lab.ssh(user, f"docker inspect -f '{template}' {container}").stdout.strip()


def _gateway(lab: host.Lab, user: str, network: str) -> str:
    template = "{{(index .IPAM.Config 0).Gateway}}"
    return lab.ssh(user, f"docker network inspect -f '{template}' {network}").stdout.strip()


def _packets_received(lab: host.Lab, user: str, container: str) -> int:
    """IPv4 packets the container's network namespace has received (Ip: InReceives)."""
    snmp = lab.ssh(user, f"docker exec {container} cat /proc/net/snmp").stdout.splitlines()
    names, values = (line.split() for line in snmp if line.startswith("Ip:"))
    return int(values[names.index("InReceives")])


def _in_outside(lab: host.Lab, counter: str) -> int:
    """One Udp: counter of the outside namespace."""
    snmp = lab.run(["ip", "netns", "exec", "outside", "cat", "/proc/net/snmp"]).stdout
    names, values = (line.split() for line in snmp.splitlines() if line.startswith("Udp:"))
    return int(values[names.index(counter)])


def _run_web(lab: host.Lab, user: str, name: str, flags: str = "") -> None:
    lab.ssh(user, f"docker rm -f {name} >/dev/null 2>&1; docker run -d --name {name} {flags} "
            f"{IMAGE} httpd -f -p 80 -h /var/www >/dev/null")  # fmt: skip


def _network(lab: host.Lab, user: str, name: str, flags: str = "") -> command.Result:
    return lab.ssh(user, f"docker network rm {name} >/dev/null 2>&1; "
                   f"docker network create {flags} {name}", check=False)  # fmt: skip


@pytest.fixture(scope="module")
def routed_outside(lab: host.Lab, outside: str) -> str:
    """The outside namespace with routes to the tenant pools and the system daemon's
    networks through the lab host, as a LAN neighbour would have them."""
    for pool in ("10.96.0.0/12", "10.128.0.0/9", "172.16.0.0/12", "192.0.2.0/24"):
        lab.run(["ip", "-n", "outside", "route", "replace", pool, "via", UPLINK])
    return outside


@pytest.fixture(scope="module")
def webs(lab: host.Lab, tenants: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """alice's web servers: on her main bridge (port 80 published as 8080) and on a
    user-defined network; bob's network for senders on a user-defined network."""
    _network(lab, "alice", "anet")
    _network(lab, "bob", "bnet")
    _run_web(lab, "alice", "web", "-p 8080:80")
    _run_web(lab, "alice", "web2", "--network anet")
    yield {
        "bridge": _address(lab, "alice", "web"),
        "network": _address(lab, "alice", "web2", "anet"),
    }
    lab.ssh("alice", "docker rm -f web web2; docker network rm anet", check=False)
    lab.ssh("bob", "docker network rm bnet", check=False)


def _boot(lab: host.Lab, system_docker: bool) -> None:
    """The host as after a boot: no forwarding and an empty iptables ruleset until the
    sysctl files, dtenant's firewall and (when installed) the system dockerd run."""
    lab.sh(
        "systemctl stop docker.service docker.socket"
        " && for t in filter nat; do iptables -t $t -F && iptables -t $t -X; done"
        " && iptables -P FORWARD ACCEPT && { ip link del docker0 2>/dev/null; true; }"
        " && echo 0 > /proc/sys/net/ipv4/ip_forward"
    )
    lab.run(["/usr/lib/systemd/systemd-sysctl"], check=False)  # kernel.* is read-only here
    lab.run(["systemctl", "restart", "dtenant-firewall.service"])
    if system_docker:
        lab.run(["systemctl", "start", "docker.service"])
        # Port 80 published, 81 not (plain Docker lets anyone with a route reach a
        # container's published port at the container's own address too).
        lab.sh(f"docker rm -f sysweb >/dev/null 2>&1; docker run -d --name sysweb -p 8090:80"
               f" {IMAGE} sh -c 'httpd -p 81 -h /var/www && exec httpd -f -p 80 -h /var/www'"
               " >/dev/null")  # fmt: skip


@pytest.fixture(scope="module", params=["system-docker", "no-system-docker"])
def booted(
    request: pytest.FixtureRequest, lab: host.Lab, webs: dict[str, str], routed_outside: str
) -> Iterator[bool]:
    system_docker = request.param == "system-docker"
    _boot(lab, system_docker)
    yield system_docker
    lab.sh("docker rm -f sysweb >/dev/null 2>&1; systemctl start docker.service"
           " && dtenant firewall sync >/dev/null")  # fmt: skip


@pytest.fixture(scope="module")
def rawsend(lab: host.Lab, tenants: tuple[str, ...]) -> str:
    """A static raw-socket sender in bob's home (CAP_NET_RAW is all it needs)."""
    source = CHECKOUT / "tests" / "sandbox" / "rawsend.c"
    lab.run(["install", "-d", "-o", "bob", "-g", "bob", TOOLS])
    lab.run(["gcc", "-O2", "-static", "-o", f"{TOOLS}/rawsend", str(source)])
    lab.run(["chown", "bob:", f"{TOOLS}/rawsend"])
    return f"-v {TOOLS}:/tools:ro"


# --- Spoofed sources (item 3) ----------------------------------------------------------


def _spoof(lab: host.Lab, how: str, network: str, source: str, target: str, rawsend: str) -> None:
    """bob's container (on his main bridge or his network `bnet`) sends to target from
    `source`: with NET_ADMIN only (an address of its own plus a route that picks it:
    a TCP SYN), or with NET_RAW only (a hand-made UDP datagram on a raw socket)."""
    net = "--network bnet" if network == "network" else ""
    if how == "NET_ADMIN":
        script = (f"ip addr add {source}/32 dev eth0 && gw=$(ip route | sed -n "
                  "'s/^default via \\([0-9.]*\\).*/\\1/p')"
                  f" && ip route add {target}/32 via $gw src {source}"
                  f" && timeout 2 nc {target} 80 </dev/null")  # fmt: skip
        flags = f"{net} --cap-drop NET_RAW --cap-add NET_ADMIN"
    else:
        script = f"/tools/rawsend {source} {target} 9 5"
        flags = f"{net} {rawsend} --cap-drop NET_ADMIN"
    out = _in_container(lab, "bob", flags, script)
    if how == "NET_RAW":
        assert out.strip().endswith("rc=0"), out  # sent: only the host can stop it


def test_the_packet_counter_sees_a_tenants_own_packets(
    lab: host.Lab, webs: dict[str, str], rawsend: str
) -> None:
    """The control for the spoofing tests: what does arrive is counted."""
    lab.run(["install", "-m", "755", f"{TOOLS}/rawsend", "/home/alice/rawsend"])
    before = _packets_received(lab, "alice", "web")
    flags = "-v /home/alice/rawsend:/rawsend:ro"
    script = f"/rawsend $(hostname -i) {webs['bridge']} 9 5"
    assert _in_container(lab, "alice", flags, script).strip().endswith("rc=0")
    assert _packets_received(lab, "alice", "web") - before >= 5


@pytest.mark.parametrize("network", ["bridge", "network"])
@pytest.mark.parametrize("how", ["NET_ADMIN", "NET_RAW"])
@pytest.mark.parametrize("spoofed", ["alice's range", "no tenant's range"])
def test_a_spoofed_source_reaches_no_other_tenant(
    lab: host.Lab, booted: bool, webs: dict[str, str], rawsend: str,
    network: str, how: str, spoofed: str,
) -> None:  # fmt: skip
    target = webs[network]
    source = target.rsplit(".", 1)[0] + ".200" if spoofed == "alice's range" else NOWHERE
    container = "web" if network == "bridge" else "web2"
    before = _packets_received(lab, "alice", container)
    _spoof(lab, how, network, source, target, rawsend)
    assert _packets_received(lab, "alice", container) == before


# --- Nothing from outside but published ports (item 5) ---------------------------------


def test_the_outside_reaches_no_unpublished_tenant_port(
    lab: host.Lab, booted: bool, webs: dict[str, str]
) -> None:
    assert _from_outside(lab, f"http://{webs['bridge']}:80/") == BLOCKED
    assert _from_outside(lab, f"http://{webs['network']}:80/") == BLOCKED


def test_the_outside_reaches_a_published_tenant_port(
    lab: host.Lab, booted: bool, webs: dict[str, str]
) -> None:
    assert _from_outside(lab, f"http://{UPLINK}:8080/") == "hello from dtenant"


def test_tenant_containers_still_reach_the_outside(
    lab: host.Lab, booted: bool, webs: dict[str, str]
) -> None:
    assert _fetch_in_container(lab, "alice", "", f"http://{OUTSIDE}:80/") == "outside-ok"
    got = _fetch_in_container(lab, "bob", "--network bnet", f"http://{OUTSIDE}:80/")
    assert got == "outside-ok"


@pytest.fixture
def neighbour(lab: host.Lab) -> Iterator[str]:
    """A web server in another network namespace linked to the lab host only: reachable
    from the outside only if the host routes between its links."""
    lab.sh(
        "ip netns add neighbour && ip link add nb type veth peer name eth0 netns neighbour"
        " && ip addr add 192.0.2.1/24 dev nb && ip link set nb up"
        " && ip -n neighbour addr add 192.0.2.2/24 dev eth0 && ip -n neighbour link set eth0 up"
        " && ip -n neighbour route add default via 192.0.2.1"
        " && ip netns exec neighbour /bin/busybox httpd -p 80 -h /srv/outside"
    )
    yield "192.0.2.2"
    lab.sh("ip netns pids neighbour | xargs -r kill; ip link del nb; ip netns del neighbour",
           check=False)  # fmt: skip


def test_dtenant_makes_the_host_no_router_for_others(
    lab: host.Lab, booted: bool, routed_outside: str, neighbour: str
) -> None:
    """Forwarding is on for tenants only: the outside reaches no other network of the
    host through it (as Docker does: whoever turns forwarding on sets FORWARD to DROP)."""
    assert _from_outside(lab, f"http://{neighbour}:80/") == BLOCKED


def _system_web(lab: host.Lab, booted: bool) -> str:
    if not booted:
        pytest.skip("no system docker.service")
    return lab.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "sysweb"]
                   ).stdout.strip()  # fmt: skip


def test_the_outside_reaches_the_system_daemons_containers_as_with_plain_docker(
    lab: host.Lab, booted: bool
) -> None:
    address = _system_web(lab, booted)
    assert _from_outside(lab, f"http://{address}:81/") == BLOCKED
    assert _from_outside(lab, f"http://{UPLINK}:8090/") == "hello from dtenant"


def test_the_system_daemons_containers_reach_no_tenant_container(
    lab: host.Lab, booted: bool, webs: dict[str, str]
) -> None:
    _system_web(lab, booted)
    for address in webs.values():
        script = f"timeout 3 wget -qO- http://{address}:80/; echo rc=$?"
        result = lab.run(["docker", "run", "--rm", IMAGE, "sh", "-c", script])
        assert result.stdout.strip().endswith("rc=143"), result.stdout  # dropped: no answer


def test_tenant_containers_reach_no_system_container(
    lab: host.Lab, booted: bool, webs: dict[str, str]
) -> None:
    address = _system_web(lab, booted)
    for port in (80, 81):
        url = f"http://{address}:{port}/"
        assert _fetch_in_container(lab, "alice", "", url) == BLOCKED
        assert _fetch_in_container(lab, "bob", "--network bnet", url) == BLOCKED


def test_a_flushed_ruleset_leaves_the_host_no_router(
    lab: host.Lab, booted: bool, routed_outside: str, neighbour: str
) -> None:
    """nftables.service flushes every table at a restart, iptables' FORWARD policy with
    them; dtenant's firewall comes back with it (PartOf=), and so does the DROP policy
    it set when it turned forwarding on."""
    lab.run(["systemctl", "restart", "nftables.service"])
    lab.run(["systemctl", "start", "dtenant-firewall.service"])  # waits for its restart job
    try:
        assert _from_outside(lab, f"http://{neighbour}:80/") == BLOCKED
        assert _fetch_in_container(lab, "alice", "", f"http://{OUTSIDE}:80/") == "outside-ok"
    finally:
        # Stopping flushes again and stops dtenant's firewall with it (PartOf=).
        lab.run(["systemctl", "stop", "nftables.service"])
        lab.run(["systemctl", "start", "dtenant-firewall.service"])
        if booted:  # the system daemon's rules went with the flush
            lab.run(["systemctl", "restart", "docker.service"])


# --- Docker's network options (item 4) --------------------------------------------------


@pytest.fixture
def upstream_outside(lab: host.Lab) -> Iterator[None]:
    """The host's resolver is the outside namespace (where nothing answers on port 53:
    each query shows as a UDP packet to a closed port there)."""
    saved = lab.run(["cat", "/etc/resolv.conf"]).stdout
    lab.run(["tee", "/etc/resolv.conf"], input=f"nameserver {OUTSIDE}\n")
    yield
    lab.run(["tee", "/etc/resolv.conf"], input=saved)


def _creates(lab: host.Lab, user: str, name: str, flags: str) -> bool:
    """False when dtenant's policy denies the network (with a message naming the option)."""
    result = _network(lab, user, name, flags)
    if result.returncode == 0:
        return True
    assert "authorization denied" in result.stderr, result.stderr
    return False


def test_an_internal_network_reaches_nothing_outside_itself(
    lab: host.Lab, webs: dict[str, str], routed_outside: str, upstream_outside: None
) -> None:
    queries = _in_outside(lab, "NoPorts")
    # The control: through a plain network's embedded DNS, the query does leave.
    _in_container(lab, "alice", "--network anet", "nslookup control.example. 127.0.0.11")
    assert _in_outside(lab, "NoPorts") > queries
    if not _creates(lab, "alice", "inet", "--internal"):
        return
    try:
        queries = _in_outside(lab, "NoPorts")
        gateway = _gateway(lab, "alice", "inet")
        flags = "--network inet --cap-add NET_ADMIN"
        script = (f"ip route add default via {gateway} 2>/dev/null;"
                  f" timeout 3 wget -qO- http://{OUTSIDE}:80/;"
                  f" echo | timeout 3 nc {gateway} 22;"
                  " nslookup leak.example. 127.0.0.11")  # fmt: skip
        out = _in_container(lab, "alice", flags, script)
        assert "outside-ok" not in out  # the outside
        assert "SSH-" not in out  # the host's sshd
        assert _in_outside(lab, "NoPorts") == queries  # the upstream resolver
    finally:
        lab.ssh("alice", "docker network rm inet", check=False)


def test_an_icc_false_network_isolates_its_containers(lab: host.Lab, webs: dict[str, str]) -> None:
    if not _creates(lab, "alice", "noicc", "-o com.docker.network.bridge.enable_icc=false"):
        return
    try:
        _run_web(lab, "alice", "iccweb", "--network noicc")
        address = _address(lab, "alice", "iccweb", "noicc")
        got = _fetch_in_container(lab, "alice", "--network noicc", f"http://{address}:80/")
        assert got == BLOCKED
    finally:
        lab.ssh("alice", "docker rm -f iccweb; docker network rm noicc", check=False)


def test_a_port_published_on_loopback_is_reachable_from_the_host_only(
    lab: host.Lab, webs: dict[str, str], routed_outside: str
) -> None:
    _run_web(lab, "alice", "lo-web", "-p 127.0.0.1:8081:80")
    try:
        assert _fetch(lab, "", "http://127.0.0.1:8081/") == "hello from dtenant"
        assert _from_outside(lab, f"http://{UPLINK}:8081/") == BLOCKED
        gateway = _gateway(lab, "bob", "bridge")
        assert _fetch_in_container(lab, "bob", "", f"http://{gateway}:8081/") == BLOCKED
        alice_gateway = _gateway(lab, "alice", "bridge")
        assert _fetch_in_container(lab, "bob", "", f"http://{alice_gateway}:8081/") == BLOCKED
        address = _address(lab, "alice", "lo-web")
        assert _fetch_in_container(lab, "bob", "", f"http://{address}:80/") == BLOCKED
        assert _from_outside(lab, f"http://{address}:80/") == BLOCKED
    finally:
        lab.ssh("alice", "docker rm -f lo-web", check=False)
