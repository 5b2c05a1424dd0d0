"""Where dtenant keeps things. Standard library only: the login hook's hot path reads it."""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path("/etc/dtenant")
CONFIG_FILE = CONFIG_DIR / "dtenant.toml"
CONFIG_DROPINS = CONFIG_DIR / "dtenant.toml.d"

STATE_DIR = Path("/var/lib/dtenant")  # registry and every tenant's data (persistent)
REGISTRY = STATE_DIR / "registry.sqlite3"
TENANTS_DIR = STATE_DIR / "tenants"

RUN_DIR = Path("/run/dtenant")  # volatile: stamps, locks, exec-roots
STAMPS_DIR = RUN_DIR / "stamps"
LOCKS_DIR = RUN_DIR / "locks"
RUN_TENANTS_DIR = RUN_DIR / "tenants"

NETWORKD_DIR = Path("/etc/systemd/network")
HOOK = Path("/usr/lib/dtenant/pam-hook")


def socket_path(user: str) -> Path:
    """The tenant's Docker socket; pam_env builds the same path from @{PAM_USER}."""
    return Path(f"/run/docker-{user}.sock")


def stamp_path(user: str) -> Path:
    return STAMPS_DIR / user


PAM_ENV_CONF = CONFIG_DIR / "pam_env.conf"
PAM_PROFILE = Path("/usr/share/pam-configs/dtenant")
