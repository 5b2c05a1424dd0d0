from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtenant_session import render
from dtenant_session.config import DAEMON_EXTRA, Config, Daemon
from dtenant_session.errors import DtenantError
from dtenant_session.registry import Allocation

CHECKOUT = Path(__file__).resolve().parents[2]
ALICE = Allocation("alice", 1000, 3, "10.96.2.0/24", "10.128.32.0/20", 0.0, "/home/alice",
                   1_879_179_264)  # fmt: skip
BOB = Allocation("bob", 1001, 4, "10.96.3.0/24", "10.128.48.0/20", 0.0)


def test_networkd_files_match_the_interface_name() -> None:
    assert "[NetDev]\nName=dtenant3\nKind=bridge\n" in render.netdev(ALICE)
    network = render.network(ALICE)
    assert "[Match]\nName=dtenant3\n" in network
    assert "Address=10.96.2.1/24" in network
    assert "ConfigureWithoutCarrier=yes" in network


def test_daemon_json_isolates_every_per_daemon_resource() -> None:
    daemon = json.loads(render.daemon_json(ALICE, Config()))
    assert daemon["bridge"] == "dtenant3"
    assert daemon["data-root"] == "/var/lib/dtenant/tenants/alice/docker"
    assert daemon["exec-root"] == "/run/dtenant/tenants/alice/exec"
    assert daemon["pidfile"] == "/run/dtenant/tenants/alice/docker.pid"
    assert daemon["iptables"] is False
    assert daemon["default-address-pools"] == [{"base": "10.128.32.0/20", "size": 24}]
    assert "containerd" not in daemon  # its own, in its own mount namespace
    assert daemon["live-restore"] is True  # off, dockerd would delete the host's docker0
    assert daemon["deprecated-key-path"] == "/var/lib/dtenant/tenants/alice/key.json"
    assert "hosts" not in daemon  # -H fd:// comes from the unit
    # Container root is the tenant's own account (block 28674), never the user.
    assert daemon["userns-remap"] == "_dtenant28674:_dtenant28674"


def test_extra_daemon_settings_never_override_owned_ones() -> None:
    config = Config(daemon=Daemon(extra={"log-level": "warn", "bridge": "docker0"}))
    daemon = json.loads(render.daemon_json(ALICE, config))
    assert daemon["log-level"] == "warn"
    assert daemon["bridge"] == "dtenant3"


def test_no_allowed_extra_key_is_one_dtenant_sets() -> None:
    assert not set(DAEMON_EXTRA) & set(render.daemon_config(ALICE, Config()))


def test_pam_lines_are_static_and_gate_pam_env_on_dtenants_list() -> None:
    assert render.pam_session_lines() == [
        ("[default=ignore]", "pam_exec.so quiet type=open_session /usr/lib/dtenant/pam-hook"),
        ("[success=1 default=ignore]", "pam_listfile.so item=user sense=deny "
         "file=/var/lib/dtenant/docker-host-users onerr=succeed quiet"),
        ("optional", "pam_env.so conffile=/etc/dtenant/pam_env.conf readenv=0 user_readenv=0"),
    ]  # fmt: skip


def test_no_pam_line_jumps_or_fails_on_a_failure() -> None:
    """pam.conf(5): a jump is 'ok' (libpam replays it as required at close_session), so
    only success may jump; anything else is ignored, and nothing is required."""
    for control, module in render.pam_session_lines():
        if control == "optional":
            continue
        actions = dict(word.split("=") for word in control.strip("[]").split())
        assert actions.pop("default") == "ignore", module
        assert set(actions) <= {"success"}, module


def test_shipped_pam_files_are_the_rendered_ones() -> None:
    assert (CHECKOUT / "pam" / "dtenant").read_text() == render.pam_profile()
    assert (CHECKOUT / "pam" / "dtenant.pam").read_text() == render.pam_snippet()
    env = (CHECKOUT / "pam" / "pam_env.conf").read_text()
    assert "DOCKER_HOST DEFAULT=unix:///run/docker-@{PAM_USER}.sock" in env


STRICT_RULESET = """\
table inet dtenant
delete table inet dtenant
table inet dtenant {
\tset tenant_nets {
\t\ttype ipv4_addr; flags interval;
\t\telements = { 10.96.2.0/24, 10.96.3.0/24, 10.128.32.0/20, 10.128.48.0/20 }
\t}
\tset same_tenant {
\t\ttype ipv4_addr . ipv4_addr; flags interval;
\t\telements = { 10.96.2.0/24 . 10.96.2.0/24, 10.96.2.0/24 . 10.128.32.0/20, \
10.128.32.0/20 . 10.96.2.0/24, 10.128.32.0/20 . 10.128.32.0/20, \
10.96.3.0/24 . 10.96.3.0/24, 10.96.3.0/24 . 10.128.48.0/20, \
10.128.48.0/20 . 10.96.3.0/24, 10.128.48.0/20 . 10.128.48.0/20 }
\t}
\tchain prerouting {
\t\ttype filter hook prerouting priority raw; policy accept;
\t\tip saddr @tenant_nets fib saddr . iif oif missing counter drop \
comment "a tenant address arrives only from its own link"
\t\tiifname { "dtenant*", "br-*" } meta nfproto ipv4 fib saddr . iif oif missing counter drop \
comment "containers send only from their own addresses"
\t}
\tchain forward {
\t\ttype filter hook forward priority filter - 5; policy accept;
\t\tct state established,related accept
\t\tip daddr @tenant_nets ip saddr . ip daddr != @same_tenant counter drop \
comment "strict: new connections into a tenant's ranges from the tenant only"
\t\tip saddr @tenant_nets ip daddr != @tenant_nets oifname { "docker0", "br-*" } counter drop \
comment "no tenant opens connections to the system daemon's containers"
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr @tenant_nets ip daddr != @tenant_nets masquerade
\t}
}
"""


def test_nft_ruleset_in_strict_mode() -> None:
    # Spoofed sources die in prerouting (reverse path); in forward, past replies, only a
    # tenant's own pairs open connections into its ranges: nothing from the LAN, the
    # host's other bridges or other tenants; tenants open none to the system daemon's
    # containers.
    assert render.nft_ruleset([ALICE, BOB], "strict") == STRICT_RULESET


def test_nft_ruleset_in_open_mode_differs_only_between_tenants() -> None:
    strict_rule = (
        "\t\tip daddr @tenant_nets ip saddr . ip daddr != @same_tenant counter drop "
        'comment "strict: new connections into a tenant\'s ranges from the tenant only"\n'
    )
    open_rule = (
        "\t\tip daddr @tenant_nets ip saddr != @tenant_nets counter drop "
        'comment "open: new connections into tenant ranges from tenants only"\n'
    )
    expected = STRICT_RULESET.replace(strict_rule, open_rule)
    assert expected != STRICT_RULESET
    assert render.nft_ruleset([ALICE, BOB], "open") == expected


def test_nft_ruleset_without_tenants_keeps_its_sets_and_chains() -> None:
    text = render.nft_ruleset([], "strict")
    assert "\t\t\n" in text  # empty sets: no elements line
    assert text.count("chain ") == 3
    assert "elements" not in text


def test_the_docker_host_list_is_one_name_a_line() -> None:
    """pam_listfile compares each whole line (less its newline) with the user name."""
    names = {"bob", "4242", "default", "alice"}
    assert render.pam_user_list(names) == "4242\nalice\nbob\ndefault\n"
    assert render.pam_user_list(set()) == ""
    for bad in ("", "a b", "a\nb", "alice\n", "-x", ".x", "a/b", "x" * 33, "tab\t"):
        with pytest.raises(DtenantError):
            render.pam_user_list({bad})


def test_nft_add_tenant_adds_only_its_own_pairs() -> None:
    text = render.nft_add_tenant(ALICE)
    assert "add element inet dtenant tenant_nets { 10.96.2.0/24, 10.128.32.0/20 }" in text
    assert text.count(" . ") == 4
    assert "10.96.3.0/24" not in text


def test_nft_ruleset_replaces_the_table_atomically() -> None:
    text = render.nft_ruleset([], "strict")
    assert text.startswith("table inet dtenant\ndelete table inet dtenant\ntable inet dtenant {")


def test_unit_dropins_use_numbers_and_refuse_paths_systemd_would_misread() -> None:
    assert render.socket_dropin(ALICE).endswith("[Socket]\nSocketUser=1000\n")
    dropin = render.service_dropin(ALICE, ["/home/alice", "/scratch/alice"])
    assert dropin.endswith(
        "[Service]\nBindPaths=/run/dtenant/tenants/alice.1879179264.1879179264 -/home/alice "
        "-/scratch/alice\n"
    )
    for bad in ("/home/a b", "/home/a:b", "/home/%i", '/home/"a"', "relative"):
        with pytest.raises(DtenantError, match="cannot be handed to systemd"):
            render.service_dropin(ALICE, [bad])


def test_orphan_scopes_are_the_container_and_held_scopes_of_the_slice(tmp_path: Path) -> None:
    from dtenant_session import daemonstop

    group = tmp_path / "systemd" / "dtenant.slice" / "dtenant-alice.slice"
    for name in ("docker-abc.scope", "docker-def.scope", "docker@alice.service", "other",
                 "dtenant-moved-alice-1.scope"):  # fmt: skip
        (group / name).mkdir(parents=True)
    found = daemonstop.orphan_scopes("/dtenant.slice/dtenant-alice.slice", str(tmp_path))
    assert found == ["docker-abc.scope", "docker-def.scope", "dtenant-moved-alice-1.scope"]
