"""The benchmark's rootless peers: Rootless Docker and Podman rootless, in a lab.

Host side (the real machine, before the lab boots): `fetch_packages` downloads the Debian
packages the peers need and the machine lacks; nothing is installed there. Lab side
(inside the lab, as root, with /usr/bin/python3 and only the standard library):
`install_packages` installs them offline, `start_rootless_docker` and `start_podman` run
each peer's API daemon as a transient system unit of a fresh account (so its memory is
its unit's cgroup), `import_image` loads the test image into a peer.

A peer that cannot run is a string saying why, never silently dropped.

The peers' accounts have uids outside dtenant's default eligibility (1000-59999), so the
PAM session that `loginctl enable-linger` opens for them does not make them tenants. The
peers' storage lives on a tmpfs of its own when /var/lib is the lab's overlay root:
overlayfs cannot be the upper layer of the peers' own overlay mounts.
"""

from __future__ import annotations

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

try:
    from tests import testimage
except ImportError:  # run from tests/bench as a script's sibling: the checkout is above
    sys.path.append(str(Path(__file__).resolve().parents[2]))
    from tests import testimage

# What each peer needs from Debian, beyond what a dtenant host has.
PACKAGES = {
    "rootless docker": ("docker.io", "rootlesskit", "slirp4netns", "uidmap"),
    "podman": ("podman", "slirp4netns", "uidmap"),
}
# apt must write nothing outside the download directory: no binary caches, no sandbox
# user that cannot write there.
APT_OPTIONS = (
    "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
    "-o", "APT::Sandbox::User=root", "-q",
)  # fmt: skip
PRIVATE_LISTS = ".apt-lists"  # in the download directory, only if the machine's lack them

ROOTLESS_SCRIPT = "/usr/share/docker.io/contrib/dockerd-rootless.sh"
FIRST_UID = 61000  # above dtenant's default eligibility.max_uid (59999)
SUBID_COUNT = 65536
STORAGE = Path("/var/lib/bench-peers")
STORAGE_TMPFS_SIZE = "4g"
CONFIG = Path("/run/bench-peers")  # podman's config files, root's, readable by the peer
USER_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
START_TIMEOUT = 90.0
PROBE = "bench-peers/probe:latest"


class PeerError(Exception):
    pass


# ---------------------------------------------------------------- host side


def _apt(argv: list[str], *, cwd: Path | None = None, lists: Path | None = None) -> str:
    options = list(APT_OPTIONS)
    if lists is not None:
        options += ["-o", f"Dir::State::Lists={lists}"]
    result = subprocess.run(
        ["apt-get", *options, *argv], cwd=cwd, capture_output=True, text=True, check=False,
        env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"},
    )  # fmt: skip
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.startswith("E:")]
        raise PeerError((lines or result.stderr.strip().splitlines() or ["failed"])[-1])
    return result.stdout


def planned_installs(simulation: str) -> list[tuple[str, str]]:
    """(package, version) of every `Inst` line of `apt-get -s install` output (pure)."""
    pattern = re.compile(r"^Inst (\S+) (?:\[[^]]*\] )?\((\S+) ")
    return [(m[1], m[2]) for line in simulation.splitlines() if (m := pattern.match(line))]


def _plan(packages: Iterable[str], lists: Path | None) -> list[tuple[str, str]]:
    argv = ["-s", "install", "--no-install-recommends", *packages]
    return planned_installs(_apt(argv, lists=lists))


def _private_lists(directory: Path) -> Path:
    """Fresh package lists of our own, for a machine whose lists lack a package."""
    lists = directory / PRIVATE_LISTS
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    _apt(["update"], lists=lists)
    return lists


def _download(wanted: list[tuple[str, str]], directory: Path, lists: Path | None) -> dict[str, str]:
    """Downloads these versions into `directory`: {package: why not} of those that failed.

    One apt run for all (it reads its cache once); one per package only if that fails."""
    argv = ["download", *(f"{name}={version}" for name, version in wanted)]
    try:
        if wanted:
            _apt(argv, cwd=directory, lists=lists)
    except PeerError:
        pass
    else:
        return {}
    failed = {}
    for name, version in wanted:
        try:
            _apt(["download", f"{name}={version}"], cwd=directory, lists=lists)
        except PeerError as error:
            failed[name] = f"{version}: {error}"
    return failed


def fetch_packages(directory: Path) -> list[str]:
    """Downloads into `directory` the .debs the peers need that this machine lacks.

    Installs nothing; the machine's package lists are used as they are, and only if they
    lack a package are fresh ones fetched, into `directory`. Returns one problem per peer
    that cannot run (empty: everything is there)."""
    directory.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    plans: dict[str, list[tuple[str, str]]] = {}
    lists: Path | None = None
    for peer, packages in PACKAGES.items():
        try:
            plans[peer] = _plan(packages, lists)
        except PeerError as error:
            try:
                lists = lists or _private_lists(directory)
                plans[peer] = _plan(packages, lists)
            except PeerError as again:
                problems.append(f"{peer}: not downloadable ({error}; with fresh lists: {again})")
    wanted = sorted({item for plan in plans.values() for item in plan})
    failed = _download(wanted, directory, lists)
    problems += [f"{name}: not downloadable ({error})" for name, error in failed.items()]
    for peer, plan in plans.items():
        missing = sorted(name for name, _ in plan if name in failed)
        if missing:
            problems.append(f"{peer}: cannot run without {', '.join(missing)}")
    return problems


# ---------------------------------------------------------------- lab side


def _run(
    argv: list[str], *, input: bytes | str | None = None, timeout: float = 120.0
) -> subprocess.CompletedProcess[bytes]:
    data = input.encode() if isinstance(input, str) else input
    try:
        result = subprocess.run(argv, input=data, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PeerError(f"{' '.join(argv[:6])}: no answer in {timeout:.0f} s") from None
    if result.returncode != 0:
        said = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
        raise PeerError(f"{' '.join(argv[:6])}: {said[-1] if said else result.returncode}")
    return result


def install_packages(directory: str) -> str | None:
    """Installs the fetched .debs, offline; None when the peers' tools are all there."""
    debs = sorted(str(p) for p in Path(directory).glob("*.deb"))
    try:
        # No package lists: apt would fetch a .deb the archive has too rather than use ours
        # (and --no-download fails on local .debs: "Pathname to install is not absolute").
        with tempfile.TemporaryDirectory() as lists:
            os.mkdir(f"{lists}/partial")
            if debs:
                _run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", *APT_OPTIONS,
                      "-o", f"Dir::State::Lists={lists}", "install", "-y",
                      "--no-install-recommends", *debs], timeout=900)  # fmt: skip
    except PeerError as error:
        return f"installing the peers' packages from {directory}: {error}"
    missing = [t for t in ("podman", "rootlesskit", "slirp4netns", "newuidmap") if not _which(t)]
    return f"missing after install: {', '.join(missing)}" if missing else None


def _which(tool: str) -> bool:
    return shutil.which(tool, path=USER_PATH) is not None


def _require(*tools: str) -> None:
    missing = [tool for tool in tools if not _which(tool)]
    if missing:
        raise PeerError(f"not installed: {', '.join(missing)}")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str

    @property
    def runtime(self) -> str:
        return f"/run/user/{self.uid}"

    @property
    def storage(self) -> Path:
        return STORAGE / self.name

    def as_user(self, *environment: str) -> list[str]:
        """argv prefix: a command as this account, with only the environment given."""
        return [
            "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups",
            "env", "-i", f"HOME={self.home}", f"USER={self.name}", f"LOGNAME={self.name}",
            f"PATH={USER_PATH}", f"XDG_RUNTIME_DIR={self.runtime}", *environment,
        ]  # fmt: skip


def free_subid_start(files: Iterable[str], count: int = SUBID_COUNT) -> int:
    """A block start above every range in these subuid/subgid texts, aligned (pure)."""
    end = 100000
    for text in files:
        for line in text.splitlines():
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                end = max(end, int(fields[1]) + int(fields[2]))
    return -(-end // count) * count


def _free_uid() -> int:
    taken = {entry.pw_uid for entry in pwd.getpwall()}
    return next(uid for uid in range(FIRST_UID, FIRST_UID + 1000) if uid not in taken)


def account(name: str) -> Account:
    """The peer's account: created once, with a subordinate id block clear of every other."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        uid = _free_uid()
        _run(["useradd", "--create-home", "--shell", "/bin/sh", "--uid", str(uid),
              "--user-group", name])  # fmt: skip
        entry = pwd.getpwnam(name)
    user = Account(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    _own_subids(user)
    _runtime_directory(user)
    _storage(user)
    return user


def _subid_texts() -> list[str]:
    files = (Path("/etc/subuid"), Path("/etc/subgid"))
    return [path.read_text() if path.exists() else "" for path in files]


def _own_subids(user: Account) -> None:
    """One block for this account in /etc/subuid and /etc/subgid, above all others.

    usermod takes shadow's own lock, the one dtenant takes too."""
    mine = [
        (line.split(":")[1], line.split(":")[2])
        for text in _subid_texts()
        for line in text.splitlines()
        if line.startswith(f"{user.name}:") and line.count(":") == 2
    ]
    if len(mine) == 2 and all(int(count) >= SUBID_COUNT for _, count in mine):
        return  # both files give it a block already (ours, from an earlier start)
    for first, count in mine:  # e.g. useradd's own pick, which may be below dtenant's
        last = int(first) + int(count) - 1
        _run(["usermod", "--del-subuids", f"{first}-{last}", "--del-subgids",
              f"{first}-{last}", user.name])  # fmt: skip
    start = free_subid_start(_subid_texts())
    block = f"{start}-{start + SUBID_COUNT - 1}"
    _run(["usermod", "--add-subuids", block, "--add-subgids", block, user.name])


def _runtime_directory(user: Account) -> None:
    """/run/user/UID, from logind: lingering starts the account's user manager."""
    _run(["loginctl", "enable-linger", user.name])
    deadline = time.monotonic() + 20
    while not os.path.isdir(user.runtime):
        if time.monotonic() > deadline:
            raise PeerError(f"{user.runtime}: logind made no runtime directory for {user.name}")
        time.sleep(0.1)


def _storage(user: Account) -> None:
    """The peer's data directory, on a filesystem overlay mounts can use as upper layer."""
    STORAGE.mkdir(mode=0o755, exist_ok=True)
    if not os.path.ismount(STORAGE) and _filesystem(STORAGE) == "overlayfs":
        _run(["mount", "-t", "tmpfs", "-o", f"size={STORAGE_TMPFS_SIZE},mode=0755",
              "bench-peers", str(STORAGE)])  # fmt: skip
    user.storage.mkdir(mode=0o700, exist_ok=True)
    os.chown(user.storage, user.uid, user.gid)


def _filesystem(path: Path) -> str:
    return _run(["stat", "-f", "-c", "%T", str(path)]).stdout.decode().strip()


# -- the peers


@dataclass
class RootlessPeer:
    name: str  # what the benchmark prints: the peer and its storage driver
    socket: str  # the API's unix socket
    cli: list[str]  # argv prefix: the peer's CLI as its account, talking to that socket
    units: list[str]  # systemd units whose cgroups hold the peer's daemon processes
    user: str
    setup_seconds: float = 0.0
    driver: str = ""
    notes: list[str] = field(default_factory=list)

    pidfiles: list[str] = field(default_factory=list)  # processes outside the units

    def stop(self) -> None:
        for unit in self.units:
            subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
        for pidfile in self.pidfiles:
            try:
                os.kill(int(Path(pidfile).read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass


def _start_unit(unit: str, user: Account, environment: list[str], argv: list[str]) -> None:
    subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
    subprocess.run(["systemctl", "reset-failed", unit], capture_output=True, check=False)
    settings = [f"--setenv={pair}" for pair in [
        f"HOME={user.home}", f"USER={user.name}", f"PATH={USER_PATH}",
        f"XDG_RUNTIME_DIR={user.runtime}", *environment,
    ]]  # fmt: skip
    _run(["systemd-run", f"--unit={unit}", f"--uid={user.uid}", f"--gid={user.gid}",
          "--property=MemoryAccounting=yes", "--property=Delegate=yes",
          f"--working-directory={user.home}", "--collect", *settings, *argv])  # fmt: skip


def api_get(socket_path: str, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One GET on a unix-socket HTTP API: (status, body)."""
    connection = _UnixConnection(socket_path, timeout)
    try:
        connection.request("GET", path, headers={"Host": "peer"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _wait_for_api(unit: str, socket_path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if api_get(socket_path, "/_ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        state = subprocess.run(
            ["systemctl", "is-active", unit], capture_output=True, text=True, check=False
        )
        if state.stdout.strip() not in ("active", "activating"):
            raise PeerError(f"{unit} stopped: {_journal_tail(unit)}")
        time.sleep(0.1)
    raise PeerError(f"{unit}: no API on {socket_path} after {START_TIMEOUT:.0f} s")


def _journal_tail(unit: str, lines: int = 3) -> str:
    result = subprocess.run(
        ["journalctl", "-u", unit, "-n", str(lines), "-o", "cat", "--no-pager"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return " | ".join(result.stdout.strip().splitlines()) or "(no journal)"


def start_rootless_docker(user: str) -> RootlessPeer | str:
    """Rootless dockerd (Debian's dockerd-rootless.sh: rootlesskit, slirp4netns) of `user`."""
    started = time.monotonic()
    unit = f"bench-peer-rootless-docker-{user}.service"
    try:
        _require("rootlesskit", "slirp4netns", "newuidmap", "dockerd", ROOTLESS_SCRIPT)
        account_ = account(user)
        data = account_.storage / "docker"
        socket_path = f"{account_.runtime}/docker.sock"
        _start_unit(unit, account_, ["DOCKERD_ROOTLESS_ROOTLESSKIT_NET=slirp4netns"],
                    [ROOTLESS_SCRIPT, f"--data-root={data}"])  # fmt: skip
        _wait_for_api(unit, socket_path)
    except PeerError as error:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
        return f"rootless docker: {error}"
    cli = [*account_.as_user(f"DOCKER_HOST=unix://{socket_path}"), "/usr/bin/docker"]
    driver = _driver(cli, "{{.Driver}}")
    return RootlessPeer(
        name=f"rootless docker ({driver})", socket=socket_path, cli=cli, units=[unit],
        user=user, setup_seconds=round(time.monotonic() - started, 2), driver=driver,
    )  # fmt: skip


def _driver(cli: list[str], template: str) -> str:
    try:
        return _run([*cli, "info", "--format", template]).stdout.decode().strip()
    except PeerError:
        return "driver unknown"


def _podman_configs(user: Account, driver: str) -> list[str]:
    """Podman's storage and engine settings for this account, in root's files: the CLI
    and the service read the same ones through CONTAINERS_*_CONF."""
    directory = CONFIG / user.name
    directory.mkdir(parents=True, exist_ok=True)
    storage = directory / "storage.conf"
    storage.write_text(
        f'[storage]\ndriver = "{driver}"\nrunroot = "{user.runtime}/containers"\n'
        f'rootless_storage_path = "{user.storage}/podman"\n'  # rootless ignores graphroot
    )
    engine = directory / "containers.conf"
    # cgroupfs: the service is a system unit, not under the account's user manager; on
    # cgroup v1 rootless containers get no cgroups of their own either way.
    engine.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    for path in (directory, storage, engine):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return [f"CONTAINERS_STORAGE_CONF={storage}", f"CONTAINERS_CONF={engine}"]


def _podman_storage(user: Account, problems: list[str]) -> tuple[list[str], str]:
    """Kernel overlay if podman can use it rootless here, else vfs: (environment, driver).

    Appends why each driver it passed over failed to `problems`."""
    for driver in ("overlay", "vfs"):
        environment = _podman_configs(user, driver)
        cli = [*user.as_user(*environment), "/usr/bin/podman"]
        try:
            # A fresh store: its database keeps the driver a failed attempt chose.
            shutil.rmtree(user.storage / "podman", ignore_errors=True)
            # and a fresh runroot: it caches a failed overlay check (overlay/overlay-false).
            _run([*user.as_user(), "rm", "-rf", f"{user.runtime}/containers"])
            _run([*cli, "info"], timeout=120)
            _probe_storage(cli)
        except PeerError as error:
            problems.append(f"{driver}: {error}")
            continue
        return environment, driver
    raise PeerError("; ".join(problems[-2:]))


def _probe_storage(cli: list[str]) -> None:
    """A layer written and mounted: what `run` will need from the storage driver."""
    _run([*cli, "import", "-", PROBE], input=testimage.rootfs_tar(b""))
    mount = f"{cli[-1]} image mount {PROBE} && {cli[-1]} image unmount {PROBE}"
    _run([*cli, "unshare", "sh", "-c", mount], timeout=60)  # rootless mounts need its userns
    _run([*cli, "rmi", "--force", PROBE], timeout=60)


def start_podman(user: str) -> RootlessPeer | str:
    """`podman system service` of `user` on its own socket; the CLI beside it."""
    started = time.monotonic()
    unit = f"bench-peer-podman-{user}.service"
    notes: list[str] = []
    try:
        _require("podman", "slirp4netns", "newuidmap")
        account_ = account(user)
        environment, driver = _podman_storage(account_, notes)
        socket_path = f"{account_.runtime}/podman/podman.sock"
        _run([*account_.as_user(), "mkdir", "-p", os.path.dirname(socket_path)])
        _start_unit(unit, account_, environment,
                    ["/usr/bin/podman", "system", "service", "--time=0",
                     f"unix://{socket_path}"])  # fmt: skip
        _wait_for_api(unit, socket_path)
    except PeerError as error:
        subprocess.run(["systemctl", "stop", unit], capture_output=True, check=False)
        return f"podman: {error}"
    cli = [*account_.as_user(*environment), "/usr/bin/podman"]
    return RootlessPeer(
        name=f"podman rootless ({driver})", socket=socket_path, cli=cli, units=[unit],
        user=user, setup_seconds=round(time.monotonic() - started, 2), driver=driver,
        notes=notes, pidfiles=[f"/run/user/{pwd.getpwnam(user).pw_uid}/libpod/tmp/pause.pid"],
    )  # fmt: skip


def import_image(peer: RootlessPeer, tar_bytes: bytes) -> None:
    """The test image (tests/testimage.py) into the peer, under the name the tests use."""
    _run([*peer.cli[:-1], *testimage.import_argv(peer.cli[-1])], input=tar_bytes, timeout=300)


def _check(peer: RootlessPeer) -> dict[str, object]:
    """What the benchmark will ask of a peer, once: image, run, raw API call."""
    timings: dict[str, object] = {"setup_s": peer.setup_seconds, "notes": peer.notes}
    started = time.monotonic()
    import_image(peer, testimage.build())
    timings["import_s"] = round(time.monotonic() - started, 2)
    started = time.monotonic()
    _run([*peer.cli, "run", "--rm", testimage.IMAGE, "true"], timeout=120)
    timings["run_rm_true_s"] = round(time.monotonic() - started, 2)
    status, body = api_get(peer.socket, "/containers/json")
    timings["containers_json"] = f"{status} {body[:60]!r}"
    return timings


def _unit_processes(unit: str) -> int:
    procs = Path(f"/sys/fs/cgroup/systemd/system.slice/{unit}/cgroup.procs")
    if not procs.exists():  # cgroup v2
        procs = Path(f"/sys/fs/cgroup/system.slice/{unit}/cgroup.procs")
    return len(procs.read_text().split()) if procs.exists() else 0


def main(directory: str) -> None:
    """In a lab: install the peers, start both, use each once; prints what happened."""
    report: dict[str, object] = {}
    started = time.monotonic()
    report["install"] = install_packages(directory) or "ok"
    report["install_s"] = round(time.monotonic() - started, 2)
    running = []
    for start, user in ((start_rootless_docker, "peerdocker"), (start_podman, "peerpodman")):
        peer = start(user)
        if isinstance(peer, str):
            report[user] = peer
        else:
            running.append(peer)
    for peer in running:  # both up at once, as in the benchmark
        try:
            report[peer.name] = _check(peer)
        except PeerError as error:
            report[peer.name] = str(error)
        report[f"{peer.name} processes"] = {u: _unit_processes(u) for u in peer.units}
    for peer in running:
        peer.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
