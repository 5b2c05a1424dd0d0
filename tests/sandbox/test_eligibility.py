"""Eligibility decides who gets DOCKER_HOST at login: over real SSH, su and sudo, for every
rule ([eligibility] uid range, groups, deny), when the rules change, for names that look
like numbers or PAM words, and when dtenant's own state is missing or unreadable. No
login ever fails, and no PAM module logs an error on the way."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from tests.lab import host

RULES = "/etc/dtenant/dtenant.toml.d/70-eligibility-test.toml"
LIST = "/var/lib/dtenant/docker-host-users"
REGISTRY = "/var/lib/dtenant/registry.sqlite3"
SHOW = 'echo "DOCKER_HOST=${DOCKER_HOST:-unset}"'
_numbers = itertools.count(1)


def _user(lab: host.Lab, prefix: str, *, uid: int | None = None, group: str = "") -> str:
    user = f"{prefix}{next(_numbers)}"
    extra = [*(["--uid", str(uid)] if uid else []), *(["--groups", group] if group else [])]
    lab.run(["useradd", "--badname", "--create-home", "--shell", "/bin/bash", *extra, user])
    lab.authorize_key(user)
    return user


def _own(user: str) -> str:
    return f"DOCKER_HOST=unix:///run/docker-{user}.sock"


def over_ssh(lab: host.Lab, user: str) -> str:
    """What DOCKER_HOST a real SSH login of `user` gets (the login must succeed)."""
    return lab.ssh(user, SHOW, timeout=60).stdout.strip()


def every_way_in(lab: host.Lab, user: str) -> set[str]:
    """DOCKER_HOST as SSH, `su`, `su -` and `sudo -i` give it to `user`."""
    seen = {over_ssh(lab, user)}
    for argv in (["su", user, "-c", SHOW], ["su", "-", user, "-c", SHOW],
                 ["sudo", "-i", "-u", user, "sh", "-c", SHOW]):  # fmt: skip
        seen.add(lab.run(argv, timeout=60).stdout.strip().splitlines()[-1])
    return seen


def listed(lab: host.Lab) -> list[str]:
    return lab.run(["cat", LIST]).stdout.splitlines()


class PamLog:
    """What PAM modules and dtenant log from now on, in the whole journal."""

    # Not pam_env as such: Debian's sshd stack reads ~/.pam_environment and says so.
    WORDS = ("pam_exec", "pam_listfile", "dtenant/pam_env.conf", "exit code", "Refused user",
             "world writable", "Couldn't open", "bad jump")  # fmt: skip

    def __init__(self, lab: host.Lab) -> None:
        self.lab = lab
        self.mark = len(self._lines())

    def _lines(self) -> list[str]:
        return self.lab.run(["journalctl", "--no-pager", "-o", "short"]).stdout.splitlines()

    def complaints(self) -> list[str]:
        self.lab.run(["journalctl", "--sync"], check=False)
        new = self._lines()[self.mark :]
        return [line for line in new if any(word in line for word in self.WORDS)]


@pytest.fixture
def rules(lab: host.Lab) -> Iterator[Callable[..., None]]:
    """Set [eligibility] in a drop-in (then `dtenant setup`, unless told not to)."""

    def apply(text: str, *, setup: bool = True) -> None:
        lab.run(["mkdir", "-p", "/etc/dtenant/dtenant.toml.d"])
        lab.run(["tee", RULES], input=f"[eligibility]\n{text}\n")
        if setup:
            lab.run(["dtenant", "setup"], timeout=300)

    yield apply
    lab.run(["rm", "-f", RULES])
    lab.run(["dtenant", "setup"], timeout=300)


def test_uid_range_groups_and_deny_decide_who_gets_docker_host(
    lab: host.Lab, rules: Callable[..., None]
) -> None:
    lab.run(["groupadd", "-f", "dockerusers"])
    member = _user(lab, "member", group="dockerusers")
    outsider = _user(lab, "outsider")
    denied = _user(lab, "denied", group="dockerusers")
    high = _user(lab, "high", uid=60100, group="dockerusers")
    rules(f'groups = ["dockerusers"]\ndeny = ["root", "nobody", "{denied}"]')
    log = PamLog(lab)
    assert every_way_in(lab, member) == {_own(member)}
    for user in (outsider, denied, high):
        assert every_way_in(lab, user) == {"DOCKER_HOST=unset"}, user
    assert member in listed(lab)
    assert not {outsider, denied, high} & set(listed(lab))
    assert log.complaints() == []


def test_a_user_who_becomes_ineligible_loses_docker_host_at_the_next_login(
    lab: host.Lab, rules: Callable[..., None]
) -> None:
    user = _user(lab, "leaver")
    assert over_ssh(lab, user) == _own(user)
    rules(f'deny = ["root", "nobody", "{user}"]')
    assert user not in listed(lab)  # `dtenant setup` took the user off
    assert every_way_in(lab, user) == {"DOCKER_HOST=unset"}
    lab.run(["rm", "-f", RULES])
    lab.run(["dtenant", "setup"], timeout=300)
    assert every_way_in(lab, user) == {_own(user)}


def test_a_rule_change_applies_at_the_next_login_even_before_setup(
    lab: host.Lab, rules: Callable[..., None]
) -> None:
    """The login after a configuration change re-decides (the hook's cold path)."""
    user = _user(lab, "soon")
    assert over_ssh(lab, user) == _own(user)
    rules(f'deny = ["root", "nobody", "{user}"]', setup=False)
    assert over_ssh(lab, user) == "DOCKER_HOST=unset"
    rules('deny = ["root", "nobody"]', setup=False)
    assert over_ssh(lab, user) == _own(user)


@pytest.mark.parametrize(
    "name", ["requisite", "4242", "success", "ignore"]
)  # `default`: test_names
def test_names_like_numbers_or_pam_words_are_only_names(lab: host.Lab, name: str) -> None:
    lab.add_account(name)
    log = PamLog(lab)
    assert every_way_in(lab, name) == {_own(name)}
    assert every_way_in(lab, name) == {_own(name)}  # the hot path as well
    assert listed(lab).count(name) == 1
    assert log.complaints() == []


def test_without_its_list_a_login_goes_on_and_gets_no_docker_host(lab: host.Lab) -> None:
    """Fail safe: the hot path does not write the list; nobody gets DOCKER_HOST until
    `dtenant setup` (or the user's next provisioning login) writes it again."""
    user = _user(lab, "nolist")
    assert over_ssh(lab, user) == _own(user)
    log = PamLog(lab)
    lab.run(["mv", LIST, f"{LIST}.away"])
    try:
        assert over_ssh(lab, user) == "DOCKER_HOST=unset"
        assert log.complaints() == []  # quiet: a missing list is no error
        lab.run(["dtenant", "setup"], timeout=300)
        assert over_ssh(lab, user) == _own(user)
    finally:
        lab.run(["rm", "-f", f"{LIST}.away"])


def test_an_unreadable_registry_fails_no_login_and_setup_keeps_the_list(lab: host.Lab) -> None:
    before = _user(lab, "regold")
    assert over_ssh(lab, before) == _own(before)
    kept = listed(lab)
    lab.run(["mv", REGISTRY, f"{REGISTRY}.away"])
    lab.run(["tee", REGISTRY], input="not a database\n" * 100)
    newcomer = _user(lab, "regnew")
    try:
        # Eligible: DOCKER_HOST as before, though provisioning fails (and says so).
        assert over_ssh(lab, newcomer) == _own(newcomer)
        assert over_ssh(lab, before) == _own(before)
        failed = lab.run(["dtenant", "setup"], check=False, timeout=300)
        assert failed.returncode != 0 and REGISTRY in failed.stderr, failed.stderr
        assert set(kept) <= set(listed(lab))
    finally:
        lab.run(["mv", f"{REGISTRY}.away", REGISTRY])
    lab.run(["dtenant", "setup"], timeout=300)
    assert over_ssh(lab, newcomer) == _own(newcomer)


def test_remove_takes_the_user_off_the_list(lab: host.Lab) -> None:
    user = _user(lab, "removed")
    over_ssh(lab, user)
    assert user in listed(lab)
    lab.run(["dtenant", "remove", user])
    assert user not in listed(lab)


SESSION_ACROSS_A_CHANGE = """
import pam, subprocess, sys
user, change = sys.argv[1], sys.argv[2]
session = pam.PamAuthenticator()
assert session.authenticate(user, "", service="dtenant-check-login", call_end=False)
opened = session.open_session()
before = session.getenv("DOCKER_HOST")
subprocess.run(["sh", "-c", change], check=True)
closed = session.close_session()
session.end()
print(opened, closed, before or "unset")
"""


def test_a_list_change_during_a_session_fails_neither_open_nor_close(
    lab: host.Lab, rules: Callable[..., None]
) -> None:
    """libpam replays the open chain at close_session: the list line that jumped at
    open (user not listed) runs again at close, when the user may be listed."""
    user = _user(lab, "across")
    rules(f'deny = ["root", "nobody", "{user}"]')
    put_on = f"rm -f {RULES} && dtenant setup >/dev/null && dtenant provision {user} >/dev/null"
    seen = lab.run(["python3", "-c", SESSION_ACROSS_A_CHANGE, user, put_on], timeout=300)
    assert seen.stdout.split() == ["0", "0", "unset"], seen.stderr
    assert user in listed(lab)
    deny = f'[eligibility]\\ndeny = ["root", "nobody", "{user}"]\\n'
    take_off = f"printf '{deny}' > {RULES} && dtenant setup >/dev/null"
    seen = lab.run(["python3", "-c", SESSION_ACROSS_A_CHANGE, user, take_off], timeout=300)
    assert seen.stdout.split() == ["0", "0", _own(user).split("=", 1)[1]], seen.stderr
    assert user not in listed(lab)
