"""`python3 -m tests.lab ...` (from a checkout, as root): the command-line side of labs.

A development tool, not part of the product: the Debian package and `dtenant` know
nothing of labs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from dtenant_session.errors import DtenantError

PROG = "python3 -m tests.lab"
Handler = Callable[[argparse.Namespace], int]


class UsageError(DtenantError):
    pass


def _lab_up(args: argparse.Namespace) -> int:
    from tests.lab import host

    lab = host.up(args.name, timeout=args.timeout, binds=[Path(b) for b in args.bind],
                  kind="vm" if args.vm else "container", disk_fs=args.disk_fs)  # fmt: skip
    print(f"lab {lab.name} is up (pid {lab.pid}, booted in {lab.record.boot_seconds:.1f} s)")
    return 0


def _lab_down(args: argparse.Namespace) -> int:
    from tests.lab import host

    if host.down(args.name):
        print(f"lab {args.name} is down")
    else:
        print(f"lab {args.name} was not up")
    return 0


def _lab_reboot(args: argparse.Namespace) -> int:
    from tests.lab import host

    lab = host.reboot(args.name, timeout=args.timeout)
    print(f"lab {lab.name} rebooted (pid {lab.pid}, booted in {lab.record.boot_seconds:.1f} s)")
    return 0


def _lab_exec(args: argparse.Namespace) -> int:
    from tests.lab import host

    argv = [a for a in args.argv if a != "--"] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("exec NAME -- CMD...: CMD is missing")
    lab = host.open_lab(args.name)
    enter = lab.enter_argv(argv)
    os.execv(enter[0], enter)


def _lab_shell(args: argparse.Namespace) -> int:
    from tests.lab import host

    lab = host.open_lab(args.name)
    enter = lab.enter_argv(["/bin/bash", "-l"])
    os.execv(enter[0], enter)


def _lab_list(args: argparse.Namespace) -> int:
    from tests.lab import host

    labs = host.list_labs()
    if args.json:
        print(json.dumps([asdict(s) for s in labs], indent=2))
        return 0
    print(f"{'NAME':<20} {'STATE':<8} {'PID':>8}  BOOT")
    for s in labs:
        boot = f"{s.boot_seconds:.1f} s" if s.boot_seconds else "-"
        print(f"{s.name:<20} {s.state:<8} {s.init_pid or '-':>8}  {boot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Throwaway systemd hosts for dtenant's tests and demo."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    up = verbs.add_parser("up", help="boot a lab and wait until systemd runs")
    up.add_argument("name")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for boot")
    up.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="DIR",
        help="show this host directory read-only at the same path inside",
    )
    up.add_argument("--vm", action="store_true",
                    help="a virtual machine with a kernel of its own (loop devices)")  # fmt: skip
    up.add_argument("--disk-fs", choices=("ext4", "xfs"), default="ext4",
                    help="a VM lab's disk filesystem (where its tenants' data lives)")  # fmt: skip
    up.set_defaults(handler=_lab_up)
    down = verbs.add_parser("down", help="stop a lab and remove everything it left")
    down.add_argument("name")
    down.set_defaults(handler=_lab_down)
    reboot = verbs.add_parser(
        "reboot", help="shut a lab down cleanly and boot it again, keeping its disk"
    )
    reboot.add_argument("name")
    reboot.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for boot")
    reboot.set_defaults(handler=_lab_reboot)
    run = verbs.add_parser("exec", help="run a command as root inside a lab")
    run.add_argument("name")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD...")
    run.set_defaults(handler=_lab_exec)
    shell = verbs.add_parser("shell", help="an interactive root shell inside a lab")
    shell.add_argument("name")
    shell.set_defaults(handler=_lab_shell)
    listing = verbs.add_parser("list", help="labs on this machine")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_lab_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UsageError as exc:
        parser.error(str(exc))
    except DtenantError as exc:
        print(f"tests.lab: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
