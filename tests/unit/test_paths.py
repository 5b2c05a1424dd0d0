"""Every dtenant path spelled out outside Python (the shell hook, pam_env's file, units,
tmpfiles, maintainer scripts, install.sh) is one paths.py gives: a change there without
the other fails here."""

from __future__ import annotations

import re
from pathlib import Path

from dtenant_session import paths
from dtenant_session.tenant import Tenant

CHECKOUT = Path(__file__).resolve().parents[2]
SHIPPED = ["pam", "etc", "packaging/libexec", "packaging/debian", "packaging/install.sh",
           "packaging/files.list"]  # fmt: skip
LITERAL = re.compile(r"(?:/etc/dtenant|/var/lib/dtenant|/run/dtenant|/run/docker-|/usr/lib/dtenant)"
                     r"[^\]\[\s\"'`;:),]*")  # fmt: skip
# How each language names "the user": systemd's %I, the hook's $user, pam_env's
# @{PAM_USER}, prose's USER.
USER = re.compile(r"%I|\$user|@\{PAM_USER\}|USER")
LIBEXEC = ["pam-hook", "pam-hook.sh", "provision-at-login", "check-tenant",
           "check-tenant-direct", "check-server", "authz", "daemon-failed", "stop-daemon",
           "start-daemon"]  # fmt: skip


def known() -> set[str]:
    """Every path paths.py and tenant.py give, with {} for the user."""
    t = Tenant("{}", 0, 0)
    found = {paths.CONFIG_DIR, paths.CONFIG_FILE, paths.CONFIG_DROPINS,
             f"{paths.CONFIG_DROPINS}/*.toml", paths.PAM_ENV_CONF, paths.STATE_DIR,
             paths.REGISTRY, paths.TENANTS_DIR, paths.RUN_DIR, paths.DOCKER_HOST_USERS,
             paths.STAMPS_DIR, paths.LOCKS_DIR, paths.RUN_TENANTS_DIR, paths.HOOK,
             paths.CHECK_SOCKET,
             paths.socket_path("{}"), paths.stamp_path("{}"), paths.notice_path("{}"),
             str(t.state_dir), str(t.run_dir), str(t.daemon_json), str(t.disk_image),
             *(str(p) for p in t.subid_files.values())}  # fmt: skip
    found |= {f"{paths.REGISTRY}-wal", f"{paths.REGISTRY}-shm"}  # SQLite's own
    return found | {f"{paths.LIBEXEC_DIR}/{program}" for program in LIBEXEC}


def test_paths_outside_python_are_the_ones_paths_py_gives() -> None:
    files = [f for entry in SHIPPED for f in
             ((CHECKOUT / entry).rglob("*") if (CHECKOUT / entry).is_dir() else [CHECKOUT / entry])
             if f.is_file()]  # fmt: skip
    spelled = {(literal, str(f.relative_to(CHECKOUT))) for f in files
               for literal in LITERAL.findall(f.read_text(errors="replace"))}  # fmt: skip
    assert len(spelled) > 20  # the scan found the files
    unknown = sorted((USER.sub("{}", literal), where) for literal, where in spelled
                     if USER.sub("{}", literal) not in known())  # fmt: skip
    assert unknown == [], "paths that paths.py does not give"
