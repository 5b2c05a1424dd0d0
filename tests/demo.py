"""The demo behind `tests/demo`: a lab, dtenant installed in it, users at work."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from dtenant_session.errors import DtenantError
from tests import testimage
from tests.lab import host
from tests.sandbox.conftest import install

CHECKOUT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(result_text: str) -> None:
    for line in result_text.rstrip().splitlines():
        print(f"   {line}")


def as_user(lab: host.Lab, user: str, script: str, **kwargs: Any) -> None:
    print(f"   {user}@lab$ {script}")
    result = lab.ssh(user, script, check=False, **kwargs)
    show(result.stdout + result.stderr)


def run_demo(lab: host.Lab, how: str) -> None:
    say("systemd in the lab")
    show(lab.run(["systemctl", "is-system-running"], check=False).stdout)
    units = ["systemd-journald", "dbus", "systemd-logind", "systemd-udevd",
             "systemd-networkd", "containerd", "ssh"]  # fmt: skip
    states = lab.run(["systemctl", "is-active", *units], check=False).stdout.split()
    show("   ".join(f"{u}: {s}" for u, s in zip(units, states, strict=True)))

    if how == "deb":
        say("installing dtenant's Debian package, built from this checkout (packaging/build-deb)")
    else:
        say("installing dtenant from this checkout (packaging/install.sh)")
    install(lab, how)
    show(lab.run(["dtenant", "--version"]).stdout)

    say("two users log in over SSH; each gets a daemon of their own, no flags needed")
    image = testimage.build()
    for user in ("alice", "bob"):
        lab.add_account(user)
        as_user(lab, user, 'echo "DOCKER_HOST=$DOCKER_HOST"; systemctl is-active docker@$USER')
        as_user(lab, user, f"docker import - {testimage.IMAGE} >/dev/null; "
                f"docker run --rm {testimage.IMAGE} echo hello from $USER\\'s own daemon",
                input=image)  # fmt: skip
        as_user(lab, user, "docker info --format 'data-root: {{.DockerRootDir}}'")

    say("they cannot see or touch each other's containers")
    as_user(lab, "alice", f"docker run -d --name web -p 8080:80 {testimage.IMAGE} "
            "httpd -f -p 80 -h /var/www; docker ps --format '{{.Names}} {{.Ports}}'")  # fmt: skip
    as_user(lab, "bob", "docker ps -a --format '{{.Names}}' | grep -c web || true")
    as_user(lab, "bob", "docker -H unix:///run/docker-alice.sock ps")
    ip = lab.ssh("alice", "docker inspect -f '{{.NetworkSettings.IPAddress}}' web").stdout.strip()
    say(f"alice's web server answers on the host; bob's containers cannot reach it ({ip})")
    show("host: " + lab.run(["wget", "-qO-", "http://127.0.0.1:8080/"]).stdout)
    as_user(lab, "bob", f"docker run --rm {testimage.IMAGE} sh -c "
            f"'timeout 3 wget -qO- http://{ip}:80/ || echo blocked'")  # fmt: skip

    say("a rootful daemon, yet no way to root: the policy and user namespaces")
    as_user(lab, "alice", f"docker run --rm --privileged {testimage.IMAGE} true")
    as_user(lab, "alice", f"docker run --rm -v /:/host {testimage.IMAGE} true")
    say("container root is an account nobody logs in as; run as yourself to share files")
    touch = f"docker run --rm -v $HOME:/home {testimage.IMAGE} touch /home/made-by-root"
    mine = (f'docker run --rm --user "$(id -u):$(id -g)" -v $HOME:/home {testimage.IMAGE} '
            "touch /home/made-by-alice")  # fmt: skip
    as_user(lab, "alice", f"{touch} && {mine} && ls -l ~/made-by-root ~/made-by-alice")

    say("what the administrator sees: dtenant status")
    show(lab.run(["dtenant", "status"]).stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--name", default="demo")
    parser.add_argument("--deb", action="store_true", help="install the .deb, not install.sh")
    args = parser.parse_args()
    try:
        say(f"booting lab {args.name!r} (a systemd host in namespaces, overlay root)")
        lab = host.up(args.name, binds=[CHECKOUT])
        show(
            f"booted in {lab.record.boot_seconds:.1f} s (systemd is PID {lab.pid} on this machine)"
        )
        try:
            run_demo(lab, "deb" if args.deb else "script")
        finally:
            if not args.keep:
                host.down(args.name)  # first: printing may fail (a closed pipe)
                say("the lab is torn down: nothing of it is left on this machine")
            else:
                lab_tool = f"cd {shlex.quote(str(CHECKOUT))} && python3 -m tests.lab"
                show(f"lab kept: `{lab_tool} shell {args.name}`, `{lab_tool} down {args.name}`")
    except DtenantError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
