"""Where dtenant keeps things.

Plain strings, standard library only: the pre-start check of every daemon reads this
module and must not pay for pathlib (about 8 ms of imports). Callers wrap them in Path
as needed. The shell hook, pam_env's file, the units, tmpfiles and the maintainer
scripts spell the same paths out; tests/unit/test_paths.py fails when they drift.
"""

from __future__ import annotations

CONFIG_DIR = "/etc/dtenant"
CONFIG_FILE = f"{CONFIG_DIR}/dtenant.toml"
CONFIG_DROPINS = f"{CONFIG_DIR}/dtenant.toml.d"
PAM_ENV_CONF = f"{CONFIG_DIR}/pam_env.conf"
DEBUG_FLAG = f"{CONFIG_DIR}/debug"  # while it exists, every dtenant process traces (log.py)

STATE_DIR = "/var/lib/dtenant"  # registry and every tenant's data (persistent)
REGISTRY = f"{STATE_DIR}/registry.sqlite3"
TENANTS_DIR = f"{STATE_DIR}/tenants"
DISABLED_DIR = f"{STATE_DIR}/disabled"  # `dtenant disable USER`: a file per user, the reason
# Who gets DOCKER_HOST at login: pam_listfile in pam/dtenant reads it (dockerhost.py).
DOCKER_HOST_USERS = f"{STATE_DIR}/docker-host-users"
# A file per tenant whose daemon has containers it restarts: started at boot (bootstart.py).
START_AT_BOOT_DIR = f"{STATE_DIR}/start-at-boot"
# The reaper's settings of its last good configuration: a broken file stops no pass.
REAP_SETTINGS = f"{STATE_DIR}/reap-settings.json"
# What a user is told at their next login shell (/etc/profile.d/dtenant.sh): why the
# reaper stopped their containers. Root's directory; each file the user's own, read-only.
NOTICES_DIR = "/run/dtenant-notices"


def notice_path(user: str) -> str:
    return f"{NOTICES_DIR}/{user}"


RUN_DIR = "/run/dtenant"  # volatile: stamps, locks, exec-roots
STAMPS_DIR = f"{RUN_DIR}/stamps"
CHECK_SOCKET = f"{RUN_DIR}/check.sock"  # dtenant-check.socket: the pre-start check's server
LOCKS_DIR = f"{RUN_DIR}/locks"
RUN_TENANTS_DIR = f"{RUN_DIR}/tenants"
# Present when dtenant turned IPv4 forwarding on since boot (network._enable_forwarding).
FORWARDING_MARK = f"{RUN_DIR}/forwarding-turned-on"

NETWORKD_DIR = "/etc/systemd/network"
SYSTEMD_DIR = "/etc/systemd/system"  # per-tenant drop-ins of docker@USER.{service,socket}
LIBEXEC_DIR = "/usr/lib/dtenant"  # programs units and PAM run (packaging/libexec)
HOOK = f"{LIBEXEC_DIR}/pam-hook"  # pam/pam-hook-exec.c, static; it runs pam-hook.sh
PAM_PROFILE = "/usr/share/pam-configs/dtenant"


def socket_path(user: str) -> str:
    """The tenant's Docker socket; pam_env builds the same path from @{PAM_USER}."""
    return f"/run/docker-{user}.sock"


def unit_word(text: str) -> str:
    """systemd-escape(1) of one word (a user name, one path component)."""
    out = []
    for index, char in enumerate(text):
        if (char.isascii() and (char.isalnum() or char in ":_")) or (char == "." and index > 0):
            out.append(char)
        else:
            out.append("".join(f"\\x{byte:02x}" for byte in char.encode()))
    return "".join(out)


def disk_image(user: str) -> str:
    """A capped tenant's filesystem image (limits.disk_max), with its data."""
    return f"{TENANTS_DIR}/{user}/disk.img"


def disk_unit(user: str) -> str:
    """The mount unit of the tenant's data-root (systemd-escape --path --suffix=mount)."""
    parts = f"{TENANTS_DIR}/{user}/docker".strip("/").split("/")
    return "-".join(unit_word(part) for part in parts) + ".mount"


def disabled_path(user: str) -> str:
    return f"{DISABLED_DIR}/{user}"


def stamp_path(user: str) -> str:
    return f"{STAMPS_DIR}/{user}"


def pid_file(user: str) -> str:
    """dockerd's pid file (daemon.json's pidfile)."""
    return f"{RUN_TENANTS_DIR}/{user}/docker.pid"


def containerd_pid_file(user: str) -> str:
    """The pid file of the containerd dockerd runs (libcontainerd, in its exec-root)."""
    return f"{RUN_TENANTS_DIR}/{user}/exec/containerd/containerd.pid"


def activity_path(user: str) -> str:
    """Touched on API use and by reaper passes that see a session: the last activity."""
    return f"{RUN_TENANTS_DIR}/{user}/activity"


def authz_plugin(user: str) -> str:
    return f"dtenant-{user}"


def private_subid(user: str, host_file: str) -> str:
    """The tenant's own copy of /etc/subuid or /etc/subgid, bound over it for its daemon."""
    return f"{TENANTS_DIR}/{user}/{host_file.rsplit('/', 1)[1]}"
