"""Whose is a registered tenant: a rename only when certain, anything else an orphan."""

from __future__ import annotations

from dtenant_session import standing
from dtenant_session.registry import Allocation
from dtenant_session.tenant import Account


def tenant(user: str = "carol", uid: int = 1003, home: str = "/home/carol") -> Allocation:
    return Allocation(user, uid, 3, "10.96.3.0/24", "10.128.48.0/20", 0.0, home)


def account(name: str, uid: int = 1003, home: str = "") -> Account:
    return Account(name, uid, uid, home or f"/home/{name}", frozenset())


def test_the_account_under_its_name_with_its_uid_is_the_tenants() -> None:
    assert standing.standing(tenant(), account("carol"), None).kind == standing.CURRENT
    # Its home moved, name and uid the same: still the same account.
    moved = account("carol", home="/srv/home/carol")
    assert standing.standing(tenant(), moved, None).kind == standing.CURRENT


def test_same_uid_and_same_home_under_a_new_name_is_a_certain_rename() -> None:
    seen = standing.standing(tenant(), None, account("dave", home="/home/carol"))
    assert seen.kind == standing.RENAMED
    assert seen.new_name == "dave"


def test_a_recycled_uid_with_another_home_is_no_rename() -> None:
    seen = standing.standing(tenant(), None, account("dave"))
    assert seen.kind == standing.ORPHANED
    assert "'carol' (uid 1003) no longer exists" in seen.problem
    assert "'dave' (uid 1003)" in seen.problem
    assert "/home/dave is not the tenant's /home/carol" in seen.problem


def test_a_tenant_without_a_recorded_home_is_never_certainly_renamed() -> None:
    seen = standing.standing(tenant(home=""), None, account("dave", home="/home/carol"))
    assert seen.kind == standing.ORPHANED
    assert "records no home" in seen.problem


def test_a_holder_with_a_tenant_of_its_own_does_not_take_another() -> None:
    holder = account("dave", home="/home/carol")
    seen = standing.standing(tenant(), None, holder, holder_registered=True)
    assert seen.kind == standing.ORPHANED


def test_a_name_given_to_another_uid_is_orphaned() -> None:
    seen = standing.standing(tenant(), account("carol", uid=1010), None)
    assert seen.kind == standing.ORPHANED
    assert "the name now has uid 1010" in seen.problem
    # ... even when the old uid went to an account with the tenant's home.
    both = standing.standing(tenant(), account("carol", uid=1010),
                             account("dave", home="/home/carol"))  # fmt: skip
    assert both.kind == standing.ORPHANED


def test_nobody_with_its_name_or_uid_is_gone_not_orphaned() -> None:
    seen = standing.standing(tenant(), None, None)
    assert seen.kind == standing.GONE
    assert seen.problem == "user 'carol' (uid 1003) no longer exists"


def test_claims_of_a_new_account() -> None:
    dave = account("dave", home="/home/carol")
    renamed, orphans = standing.claims(dave, [(tenant(), None)])
    assert renamed == tenant() and orphans == []
    erin = account("erin")
    renamed, orphans = standing.claims(erin, [(tenant(), None)])
    assert renamed is None and [a.user for a, _ in orphans] == ["carol"]
    # An alias of the uid that still resolves keeps its own tenant.
    alias = tenant("toor")
    renamed, orphans = standing.claims(erin, [(alias, account("toor"))])
    assert renamed is None and orphans == []


def test_two_certain_candidates_are_no_certainty() -> None:
    dave = account("dave", home="/home/carol")
    twins = [(tenant("carol"), None), (tenant("carol2"), None)]
    renamed, orphans = standing.claims(dave, twins)
    assert renamed is None
    assert [a.user for a, s in orphans] == ["carol", "carol2"]
    assert all(s.kind == standing.ORPHANED for _, s in orphans)


def test_rename_refusals() -> None:
    dave = account("dave")
    refuse = standing.rename_refusal
    assert refuse("carol", tenant(), None, dave, False) is None
    assert "not a registered tenant" in (refuse("carol", None, None, dave, False) or "")
    assert "`dtenant remove dave --purge`" in (refuse("carol", tenant(), None, dave, True) or "")
    still = refuse("carol", tenant(), account("carol"), dave, False) or ""
    assert "carol is still an account (uid 1003)" in still
    # The name is another uid's now: a rename to NEW is the administrator's to make.
    assert refuse("carol", tenant(), account("carol", uid=1010), dave, False) is None
    assert "already" in (refuse("carol", tenant(), None, account("carol"), False) or "")
