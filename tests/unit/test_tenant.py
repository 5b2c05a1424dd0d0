from __future__ import annotations

import subprocess

import pytest

from dtenant_session import tenant
from dtenant_session.config import Eligibility

NAMES = ["alice", "a.b", "x-y", "Upper", "9lives", "abcdefghijklmnopqrstuvwxyz012345",
         "under_score", "dots.and-dashes"]  # fmt: skip


def _account(name: str = "alice", uid: int = 1000, groups: tuple[str, ...] = ()) -> tenant.Account:
    return tenant.Account(name, uid, uid, f"/home/{name}", frozenset(groups))


@pytest.mark.parametrize("name", NAMES)
def test_unit_instance_matches_systemd_escape(name: str) -> None:
    escaped = subprocess.run(["/usr/bin/systemd-escape", name], capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
    assert tenant.unit_instance(name) == escaped


def test_bridge_names_fit_ifnamsiz_for_any_user_name() -> None:
    assert tenant.bridge_name(1) == "dtenant1"
    assert len(tenant.bridge_name(99_999_999)) == 15
    with pytest.raises(ValueError, match="longer than 15"):
        tenant.bridge_name(100_000_000)


def test_derived_paths_and_units() -> None:
    t = tenant.Tenant("x-y", 1001, 7)
    assert t.service_unit == "docker@x\\x2dy.service"
    assert t.socket_unit == "docker@x\\x2dy.socket"
    assert str(t.socket) == "/run/docker-x-y.sock"
    assert str(t.data_root) == "/var/lib/dtenant/tenants/x-y/docker"
    assert t.bridge == "dtenant7"
    assert t.netdev_file.name == "60-dtenant7.netdev"


@pytest.mark.parametrize("name", NAMES)
def test_unusual_names_are_eligible(name: str) -> None:
    tenant.check_eligible(_account(name), Eligibility())


@pytest.mark.parametrize(
    ("account", "rules", "reason"),
    [
        (_account("root", 0), Eligibility(min_uid=0 + 1), "root never"),
        (_account("daemon", 1), Eligibility(), "outside eligibility.min_uid"),
        (_account("big", 65534), Eligibility(), "outside eligibility.min_uid"),
        (_account("mallory"), Eligibility(deny=("mallory",)), "eligibility.deny"),
        (_account("alice"), Eligibility(groups=("docker-users",)), "eligibility.groups"),
        (_account(".hidden"), Eligibility(), "name not supported"),
        (_account("-dash"), Eligibility(), "name not supported"),
        (_account("a/b"), Eligibility(), "name not supported"),
        (_account("x" * 33), Eligibility(), "name not supported"),
    ],
)
def test_ineligible_accounts_are_told_why(
    account: tenant.Account, rules: Eligibility, reason: str
) -> None:
    with pytest.raises(tenant.NotEligible, match=reason):
        tenant.check_eligible(account, rules)


def test_group_rule_admits_members() -> None:
    tenant.check_eligible(_account(groups=("docker-users",)), Eligibility(groups=("docker-users",)))
