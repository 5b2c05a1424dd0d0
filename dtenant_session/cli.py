"""The `dtenant` command."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict

from dtenant_session import __version__, log
from dtenant_session.errors import DtenantError

Handler = Callable[[argparse.Namespace], int]


def _config(args: argparse.Namespace) -> int:
    from dtenant_session import config

    settings = config.load()
    if args.json:
        print(settings.to_json())
        return 0
    for section, values in settings.as_dict().items():
        if section == "files":
            continue
        print(f"[{section}]")
        for key, value in values.items():
            print(f"{key} = {json.dumps(value)}")
        print()
    print(f"# read from: {', '.join(settings.files) or '(no file: all defaults)'}")
    return 0


def _provision(args: argparse.Namespace) -> int:
    from dtenant_session import config, provision

    settings = config.load()
    outcome = provision.ensure(args.user, settings, force=True)
    a = outcome.allocation
    if args.json:
        print(json.dumps({**asdict(a), "bridge": a.tenant.bridge, "socket": str(a.tenant.socket),
                          "unit": a.tenant.service_unit, "steps": outcome.steps,
                          "seconds": round(outcome.seconds, 3)}, indent=2))  # fmt: skip
        return 0
    print(f"{a.user}: bridge {a.tenant.bridge} {a.bridge_subnet}, networks {a.networks_pool}, "
          f"socket {a.tenant.socket} ({outcome.seconds * 1000:.0f} ms)")  # fmt: skip
    for step in outcome.steps:
        print(f"  {step}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from dtenant_session import status

    rows = status.collect(args.user)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
        return 0
    print(status.table(rows, status.room()))
    return 0


def _setup(args: argparse.Namespace) -> int:
    from dtenant_session import config, reaper, render, setup

    settings = config.load()
    reaper.remember(settings.reap)  # the reaper's fallback should a file break later
    if args.print_pam:
        print(render.pam_snippet(), end="")
        return 0
    for step in setup.apply(settings):
        print(step)
    return 0


def _firewall_sync(_args: argparse.Namespace) -> int:
    from dtenant_session import config, network
    from dtenant_session.registry import Registry

    settings = config.load()
    with Registry() as registry:
        allocations = registry.all()
    network.sync_firewall(allocations, settings)
    print(f"nftables table inet dtenant: {len(allocations)} tenants, "
          f"isolation {settings.network.isolation}")  # fmt: skip
    return 0


def _reap(args: argparse.Namespace) -> int:
    from dtenant_session import reaper

    settings, broken = reaper.settings()
    decisions = reaper.reap(settings, dry_run=args.dry_run, user=args.user)
    if not args.dry_run:
        reaper.refresh_metrics(settings.reap, config_broken=broken is not None)
    if args.json:
        print(json.dumps(reaper.as_dicts(decisions), indent=2))
    else:
        print(reaper.table(decisions, args.dry_run))
    if broken:  # the pass is done, with the last good settings; the failure stays visible
        print(f"dtenant: {broken} (this pass used the last good reaper settings)",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _verify(args: argparse.Namespace) -> int:
    from dtenant_session import config, prestart, verify

    try:
        report = verify.verify_all(config.load(), only=args.tenant)
    except prestart.CannotCheck as exc:
        print(f"dtenant verify: could not check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(report.to_json())
    else:
        for finding in report.findings:
            print(finding.line())
        print(f"verified {len(report.checked)} tenants: {len(report.findings)} problems")
    return 1 if report.findings else 0


def _remove(args: argparse.Namespace) -> int:
    from dtenant_session import config, lifecycle

    if args.purge and not args.yes:
        answer = input(f"This deletes every image, container and volume of {args.user}. "
                       f"Type the user name to confirm: ")  # fmt: skip
        if answer.strip() != args.user:
            print("not confirmed; nothing was removed")
            return 1
    for step in lifecycle.remove(args.user, config.load(), purge=args.purge):
        print(step)
    return 0


def _rename(args: argparse.Namespace) -> int:
    from dtenant_session import config, lifecycle

    for step in lifecycle.rename_as_asked(args.old, args.new, config.load()):
        print(step)
    return 0


def _disable(args: argparse.Namespace) -> int:
    from dtenant_session import config, lifecycle

    for step in lifecycle.disable(args.user, args.reason, config.load()):
        print(step)
    return 0


def _enable(args: argparse.Namespace) -> int:
    from dtenant_session import config, lifecycle

    for step in lifecycle.enable(args.user, config.load()):
        print(step)
    return 0


def _restart(args: argparse.Namespace) -> int:
    from dtenant_session import config, lifecycle

    if args.outdated == bool(args.user):
        raise DtenantError("restart: name a USER or give --outdated (not both)")
    settings = config.load()
    steps = (
        lifecycle.restart_outdated() if args.outdated else lifecycle.restart(args.user, settings)
    )
    for step in steps:
        print(step)
    return 0


def _boot(_args: argparse.Namespace) -> int:
    from dtenant_session import config, lifecycle

    for step in lifecycle.boot(config.load()):
        print(step)
    return 0


def _logs(args: argparse.Namespace) -> int:
    """The journal of the tenant's daemon, its plugin and what dtenant did for it."""
    import os

    from dtenant_session import command, registry, tenant

    with registry.Registry() as known:
        if known.get(args.user) is None:
            raise DtenantError(f"{args.user!r} is not a registered tenant (see `dtenant status`)")
    instance = tenant.unit_instance(args.user)
    units = [f"docker@{instance}.service", f"dtenant-authz@{instance}.service",
             f"dtenant-daemon-failed@{instance}.service"]  # fmt: skip
    matches = [m for unit in units for m in (f"_SYSTEMD_UNIT={unit}", "+")]
    argv = [command.which("journalctl"), "--no-pager", *(["-f"] if args.follow else []),
            "-n", str(args.lines), *matches, f"DTENANT_USER={args.user}"]  # fmt: skip
    os.execv(argv[0], argv)  # noqa: S606 - journalctl itself: -f follows, the pager is its own
    return 1  # not reached


def _registry_rebuild(_args: argparse.Namespace) -> int:
    from dtenant_session import recover

    recovery = recover.rebuild()
    if recovery.moved_aside:
        print(f"the broken registry was moved to {recovery.moved_aside}")
    print(f"recovered {len(recovery.recovered)} tenants: {', '.join(recovery.recovered)}")
    if recovery.kept:
        print(f"not tenants (data kept by `dtenant remove`): {', '.join(recovery.kept)}")
    for problem in recovery.problems:
        print(f"not recovered: {problem}")
    return 1 if recovery.problems else 0


def _check_login(args: argparse.Namespace) -> int:
    from dtenant_session import checklogin

    report = checklogin.check(args.user)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(f"{report.user}: {report.reason}")
        print(f"PAM session opened: {'yes' if report.session_opened else 'NO'} "
              f"in {report.seconds * 1000:.0f} ms")  # fmt: skip
        print(f"DOCKER_HOST: {report.docker_host or '(not set)'}")
        print(f"provisioned: {'yes' if report.provisioned else 'no'} (socket {report.socket})")
    return 0 if report.session_opened else 1


def _registry_check(_args: argparse.Namespace) -> int:
    from dtenant_session.registry import Registry

    with Registry(read_only=True) as registry:
        problems = registry.problems()
        count = len(registry.all())
    for problem in problems:
        print(problem)
    print(f"registry: {count} tenants, {len(problems)} problems")
    return 1 if problems else 0


Command = Callable[[str, Handler, str], argparse.ArgumentParser]


def _tenant_commands(command: Command) -> None:
    """The administrator's hands on one tenant."""
    disable = command("disable", _disable,
                      "keep USER from having a daemon, whatever their logins do: it stops "
                      "and does not start again (docker commands say why); data kept")  # fmt: skip
    disable.add_argument("user")
    disable.add_argument("--reason", default="", help="shown to the user")
    enable = command("enable", _enable, "lift `dtenant disable USER`")
    enable.add_argument("user")
    restart = command("restart", _restart, "restart USER's daemon (containers stop; restart "
                      "policies apply); --outdated: move every daemon that runs an outdated "
                      "dockerd or containerd to the new one (an idle one stops, the next "
                      "command starts it; a busy one restarts, its containers keep "
                      "running)")  # fmt: skip
    restart.add_argument("user", nargs="?")
    restart.add_argument("--outdated", action="store_true")
    logs = command("logs", _logs, "the journal of USER's daemon, its plugin and dtenant's "
                   "steps for it")  # fmt: skip
    logs.add_argument("user")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=100)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dtenant",
        description="A Docker daemon of their own for every user of a shared Linux host.",
    )
    parser.add_argument("--version", action="version", version=f"dtenant {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="trace every command, D-Bus call and decision with its duration "
                             "on stderr and to the journal (as DTENANT_DEBUG=1 does)")  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, text: str) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = commands.add_parser(name, help=text, description=text)
        sub.set_defaults(handler=handler)
        return sub

    config = command("config", _config, "print the effective configuration")
    config.add_argument("--json", action="store_true")
    provision = command("provision", _provision, "provision USER now (what a first login does)")
    provision.add_argument("user")
    provision.add_argument("--json", action="store_true")
    status = command("status", _status, "tenants, their bridges, sockets and daemons")
    status.add_argument("user", nargs="?")
    status.add_argument("--json", action="store_true")
    setup = command("setup", _setup, "apply host-wide settings: PAM lines, firewall")
    setup.add_argument("--print-pam", action="store_true", help="print PAM lines for pam.d")
    reap = command("reap", _reap, "stop idle tenant daemons (dtenant-reap.timer runs this)")
    reap.add_argument("user", nargs="?", help="only this tenant")
    reap.add_argument("--dry-run", action="store_true", help="say what would be done, and why")
    reap.add_argument("--json", action="store_true")
    verify = command("verify", _verify,
                     "check data-root exclusivity and that registry, files and units agree "
                     "(exit 0: all good, 1: problems, 2: could not check)")  # fmt: skip
    verify.add_argument("--tenant", metavar="USER")
    verify.add_argument("--json", action="store_true")
    remove = command("remove", _remove,
                     "take a tenant away: units, bridge, firewall entries, registry entry; "
                     "its data only with --purge")  # fmt: skip
    remove.add_argument("user")
    remove.add_argument("--purge", action="store_true", help="also delete its data-root")
    remove.add_argument("--yes", action="store_true", help="do not ask before --purge")
    rename = command("rename", _rename,
                     "hand tenant OLD (its account deleted or renamed) to the existing account "
                     "NEW, which has no tenant: data, slot and bridge move, then NEW is "
                     "provisioned")  # fmt: skip
    rename.add_argument("old", metavar="OLD")
    rename.add_argument("new", metavar="NEW")
    command("boot", _boot,
            "make what a reboot took of each tenant, and start the daemons of tenants "
            "whose containers restart with them (dtenant-boot.service runs this at boot)"
            )  # fmt: skip
    check_login = command("check-login", _check_login,
                          "open a real PAM session for USER (as root, no password) and "
                          "report what a login does")  # fmt: skip
    check_login.add_argument("user")
    check_login.add_argument("--json", action="store_true")
    _tenant_commands(command)
    firewall = commands.add_parser("firewall", help="dtenant's nftables table")
    firewall_verbs = firewall.add_subparsers(dest="verb", required=True, metavar="VERB")
    sync = firewall_verbs.add_parser("sync", help="rebuild the table from the registry")
    sync.set_defaults(handler=_firewall_sync)
    registry = commands.add_parser("registry", help="the allocation registry")
    registry_verbs = registry.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = registry_verbs.add_parser("check", help="integrity check (exit 1 on problems)")
    check.set_defaults(handler=_registry_check)
    rebuild = registry_verbs.add_parser(
        "rebuild", help="recover a broken registry from the tenants' files on disk"
    )
    rebuild.set_defaults(handler=_registry_rebuild)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        log.enable_debug(stderr=True)
    handler: Handler = args.handler
    try:
        return handler(args)
    except DtenantError as exc:
        print(f"dtenant: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
