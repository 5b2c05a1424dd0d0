"""The demo behind `tests/demo`: a lab, dtenant installed in it, users at work."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dtenant_session import testimage
from dtenant_session.errors import DtenantError
from dtenant_session.lab import host

CHECKOUT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(result_text: str) -> None:
    for line in result_text.rstrip().splitlines():
        print(f"   {line}")


def run_demo(lab: host.Lab) -> None:
    say("systemd in the lab")
    show(lab.run(["systemctl", "is-system-running"], check=False).stdout)
    units = ["systemd-journald", "dbus", "systemd-logind", "systemd-udevd",
             "systemd-networkd", "containerd", "docker", "ssh"]  # fmt: skip
    states = lab.run(["systemctl", "is-active", *units], check=False).stdout.split()
    show("\n".join(f"{u:<18} {s}" for u, s in zip(units, states, strict=True)))

    say("installing dtenant from the checkout (packaging/install.sh)")
    lab.run([str(CHECKOUT / "packaging" / "install.sh")])
    show(lab.run(["dtenant", "--version"]).stdout)

    say("systemd-networkd configures a bridge")
    netdev = "[NetDev]\nName=demo0\nKind=bridge\n"
    network = (
        "[Match]\nName=demo0\n\n[Network]\nAddress=10.77.0.1/24\nConfigureWithoutCarrier=yes\n"
    )
    lab.run(["tee", "/etc/systemd/network/50-demo0.netdev"], input=netdev)
    lab.run(["tee", "/etc/systemd/network/50-demo0.network"], input=network)
    lab.run(["networkctl", "reload"])
    time.sleep(1)
    show(lab.run(["networkctl", "list", "--no-pager"]).stdout)

    say("dockerd runs a container of the local busybox image")
    lab.run(testimage.import_argv(), input=testimage.build())
    show(lab.run(["docker", "run", "--rm", testimage.IMAGE, "ip", "-4", "-o", "addr"]).stdout)

    say("an account logs in over SSH; logind tracks the session")
    lab.add_account("alice")
    show(
        lab.ssh("alice", 'echo "logged in as $(id -un)"; loginctl list-sessions --no-legend').stdout
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the lab running afterwards")
    parser.add_argument("--name", default="demo")
    args = parser.parse_args()
    try:
        say(f"booting lab {args.name!r} (a systemd host in namespaces, overlay root)")
        lab = host.up(args.name, binds=[CHECKOUT])
        show(
            f"booted in {lab.record.boot_seconds:.1f} s (systemd is PID {lab.pid} on this machine)"
        )
        try:
            run_demo(lab)
        finally:
            if not args.keep:
                say("tearing the lab down")
                host.down(args.name)
                show("done: nothing of the lab is left on this machine")
            else:
                show(f"lab kept: `dtenant lab shell {args.name}`, `dtenant lab down {args.name}`")
    except DtenantError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
