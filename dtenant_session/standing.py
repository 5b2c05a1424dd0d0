"""Is a registered tenant still its account's? (pure)

A tenant belongs to a name, a uid and a home. When the name is gone and its uid belongs
to another name, that is a rename only when it is certain: the same uid and the same
home. Anything else (a deleted user whose uid was given to a new account, a rename that
moved the home, a tenant of dtenant 0.1 that recorded no home, a name given to another
uid) leaves the tenant *orphaned*: its data must never reach the account that now has
its name or uid, and only the administrator can hand it on (`dtenant rename OLD NEW`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from dtenant_session import prestart
from dtenant_session.registry import Allocation
from dtenant_session.tenant import Account

CURRENT = "current"  # its name resolves with its uid
RENAMED = "renamed"  # certainly renamed: its name gone, its uid and home another name's
GONE = "gone"  # neither its name nor its uid is an account's
ORPHANED = "orphaned"  # its name or its uid is another account's: nothing may reach it


@dataclass(frozen=True)
class Standing:
    kind: str
    problem: str = ""  # one line for the journal and `dtenant verify`; "" when current
    new_name: str = ""  # RENAMED: the name it goes to


def who(name: str, uid: int) -> str:
    return f"{name!r} (uid {uid})"


def advice(user: str) -> str:
    return prestart.orphan_advice(user)


def standing(
    allocation: Allocation,
    by_name: Account | None,
    holder: Account | None,
    *,
    holder_registered: bool = False,
) -> Standing:
    """How the tenant stands. by_name: the account under its name now; holder: an account
    of another name that has its uid now; holder_registered: that one has a tenant."""
    user, uid = allocation.user, allocation.uid
    if by_name is not None and by_name.uid == uid:
        return Standing(CURRENT)
    gone = f"user {who(user, uid)} no longer exists"
    if by_name is not None:
        gone += f" (the name now has uid {by_name.uid})"
    if holder is None:
        return Standing(GONE if by_name is None else ORPHANED, gone)
    now = f"its uid now belongs to {who(holder.name, uid)}"
    if by_name is not None:
        why = "so neither is the tenant's account"
    elif not allocation.home:
        why = "the tenant records no home (made by dtenant 0.1), so no rename is certain"
    elif holder.home != allocation.home:
        why = f"whose home {holder.home} is not the tenant's {allocation.home}"
    elif holder_registered:
        why = "who has a tenant of its own"
    else:
        renamed = f"user {who(user, uid)} was renamed to {holder.name!r} (same uid and home)"
        return Standing(RENAMED, renamed, holder.name)
    return Standing(ORPHANED, f"{gone}; {now}, {why}")


def claims(
    account: Account, found: Iterable[tuple[Allocation, Account | None]]
) -> tuple[Allocation | None, list[tuple[Allocation, Standing]]]:
    """For an account without a tenant: of the tenants registered with its uid (each with
    the account under its own name now), the one it certainly was, and those orphaned.
    Two certain candidates are no certainty: both are orphaned."""
    renamed: list[tuple[Allocation, Standing]] = []
    orphaned = []
    for allocation, by_name in found:
        if allocation.user == account.name:
            continue
        seen = standing(allocation, by_name, account)
        if seen.kind == RENAMED:
            renamed.append((allocation, seen))
        elif seen.kind == ORPHANED:
            orphaned.append((allocation, seen))
    if len(renamed) == 1:
        return renamed[0][0], orphaned
    ambiguous = "; so is another tenant of the same uid and home: not certain"
    return None, orphaned + [(a, Standing(ORPHANED, s.problem + ambiguous)) for a, s in renamed]


def rename_refusal(
    old_name: str,
    old: Allocation | None,
    old_now: Account | None,
    new: Account,
    new_registered: bool,
) -> str | None:
    """Why `dtenant rename OLD NEW` must not hand OLD's tenant to NEW, or None. old: OLD's
    registry entry; old_now: the account named OLD now; new: the account named NEW."""
    if old is None:
        return f"{old_name!r} is not a registered tenant (see `dtenant status`)"
    if new.name == old_name:
        return f"{old_name!r} is already that tenant's name"
    if old_now is not None and old_now.uid == old.uid:
        return (f"{old_name} is still an account (uid {old.uid}), so this is not a rename; "
                f"delete or rename that account first")  # fmt: skip
    if new_registered:
        return (f"{new.name!r} has a tenant of its own; if its data may go, "
                f"`dtenant remove {new.name} --purge` first")  # fmt: skip
    return None
