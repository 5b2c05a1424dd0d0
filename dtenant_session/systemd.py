"""All of dtenant's D-Bus: systemd units, networkd reload, logind sessions.

dbus-next's asyncio API (its glib API crashes on Debian 12). Plain method calls by
name, no introspection: fewer round trips on the login path. dbus-fast is API
compatible; switching is this module only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from dtenant_session import log
from dtenant_session.errors import DtenantError

SYSTEMD = "org.freedesktop.systemd1"
SYSTEMD_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
NETWORKD = "org.freedesktop.network1"
NETWORKD_PATH = "/org/freedesktop/network1"
LOGIN = "org.freedesktop.login1"
LOGIN_PATH = "/org/freedesktop/login1"

T = TypeVar("T")


class BusError(DtenantError):
    pass


@dataclass(frozen=True)
class UnitState:
    name: str
    active: str  # ActiveState: active, inactive, failed, activating, ...
    sub: str  # SubState: running, listening, dead, ...


class Bus:
    """One connection to the system bus."""

    def __init__(self, bus: Any) -> None:
        self._bus = bus
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._finished: dict[str, str] = {}  # jobs that ended before we waited for them
        self._subscribed = False

    async def call(
        self, destination: str, path: str, interface: str, member: str,
        signature: str = "", body: list[Any] | None = None,
    ) -> list[Any]:  # fmt: skip
        from dbus_next.constants import MessageType
        from dbus_next.message import Message

        started = time.monotonic()
        reply = await self._bus.call(
            Message(
                destination=destination,
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        if reply.message_type == MessageType.ERROR:
            detail = reply.body[0] if reply.body else ""
            _trace_call(interface, member, body, f"error {reply.error_name}", started)
            raise BusError(f"{interface}.{member} on {destination}: {reply.error_name}: {detail}")
        _trace_call(interface, member, body, "ok", started)
        return list(reply.body)

    async def _subscribe_jobs(self) -> None:
        if self._subscribed:
            return
        rule = f"type='signal',interface='{MANAGER}',member='JobRemoved'"
        await self.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
            "AddMatch", "s", [rule],
        )  # fmt: skip
        self._bus.add_message_handler(self._on_message)
        await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "Subscribe")
        self._subscribed = True

    def _on_message(self, message: Any) -> None:
        if message.member == "JobRemoved" and message.interface == MANAGER:
            _id, job, _unit, result = message.body
            future = self._jobs.pop(job, None)
            if future is None:
                self._finished[job] = result
            elif not future.done():
                future.set_result(result)

    async def _run_job(self, member: str, unit: str, mode: str = "replace") -> None:
        await self._run_job_call(member, unit, "ss", [unit, mode])

    async def _run_job_call(self, member: str, unit: str, signature: str, body: list[Any]
                            ) -> None:  # fmt: skip
        # Subscribe before starting: a fast job may end before we would listen.
        await self._subscribe_jobs()
        started = time.monotonic()
        (job,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, member, signature, body)
        result = self._finished.pop(job, None)
        if result is None:
            future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            self._jobs[job] = future
            result = await future
        log.trace("job", f"{member} {unit}", result, started)
        if result != "done":
            raise BusError(f"{member} {unit}: job {result} (see `journalctl -u {unit}`)")

    async def start(self, unit: str) -> None:
        await self._run_job("StartUnit", unit)

    async def stop(self, unit: str) -> None:
        await self._run_job("StopUnit", unit)

    async def stop_later(self, unit: str) -> None:
        """Queue a stop job and return at once: systemd carries it out on its own."""
        await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "StopUnit", "ss", [unit, "replace"])

    async def start_scope(self, name: str, slice_: str, pids: list[int], before: str) -> None:
        """A transient scope in slice_ that adopts running processes; stopped before the
        unit `before` at a shutdown, which then still finds them."""
        from dbus_next.signature import Variant

        properties = [
            ["Description", Variant("s", f"processes kept from {before} (dtenant)")],
            ["Slice", Variant("s", slice_)],
            ["PIDs", Variant("au", pids)],
            ["Before", Variant("as", [before])],
        ]
        await self._run_job_call("StartTransientUnit", name, "ssa(sv)a(sa(sv))",
                                 [name, "fail", properties, []])  # fmt: skip

    async def invocation_id(self, unit: str) -> str:
        """The unit's current invocation ($INVOCATION_ID of its processes); "" if none."""
        (path,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "LoadUnit", "s", [unit])
        (value,) = await self.call(SYSTEMD, path, "org.freedesktop.DBus.Properties", "Get",
                                   "ss", [f"{SYSTEMD}.Unit", "InvocationID"])  # fmt: skip
        return bytes(value.value).hex()

    async def reload(self, unit: str) -> None:
        await self._run_job("ReloadUnit", unit)

    async def signal_main(self, unit: str, signal: int) -> None:
        """Send the unit's main process a signal (no ExecReload= process is started)."""
        await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "KillUnit", "ssi", [unit, "main", signal])

    async def enable(self, units: list[str]) -> None:
        await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "EnableUnitFiles", "asbb",
                        [units, False, False])  # fmt: skip

    async def disable(self, units: list[str]) -> None:
        await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "DisableUnitFiles", "asb",
                        [units, False])  # fmt: skip

    async def reset_failed(self, unit: str) -> None:
        try:
            await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ResetFailedUnit", "s", [unit])
        except BusError as exc:
            if "NoSuchUnit" not in str(exc):  # never loaded: nothing to reset
                raise

    async def reload_daemon(self) -> None:
        await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "Reload")

    async def needs_reload(self, dropins: dict[str, list[str]]) -> bool:
        """Whether systemd must reload to see changed files of these units (unit -> the
        drop-ins it must have). A unit systemd has not loaded reads its files, drop-ins
        included, when first used; a loaded one needs the reload when its files changed
        (NeedDaemonReload), when it did not load cleanly, or when a drop-in is missing
        from it: systemd 252 does not notice a drop-in directory that appeared after its
        last reload (its unit path cache), not even in NeedDaemonReload. The reload makes
        every other login and unit operation of the host wait."""
        for unit, wanted in dropins.items():
            try:
                (path,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "GetUnit", "s", [unit])
            except BusError as exc:
                if "NoSuchUnit" in str(exc):
                    continue
                raise
            (values,) = await self.call(SYSTEMD, path, "org.freedesktop.DBus.Properties",
                                        "GetAll", "s", [f"{SYSTEMD}.Unit"])  # fmt: skip
            state = getattr(values.get("LoadState"), "value", "")
            stale = getattr(values.get("NeedDaemonReload"), "value", True)
            known = set(getattr(values.get("DropInPaths"), "value", []))
            if state != "loaded" or stale or not set(wanted) <= known:
                return True
        return False

    async def units(self, patterns: list[str]) -> dict[str, UnitState]:
        """Loaded units matching patterns, in one call whatever their number."""
        (rows,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ListUnitsByPatterns",
                                  "asas", [[], patterns])  # fmt: skip
        return {row[0]: UnitState(row[0], row[3], row[4]) for row in rows}

    async def control_groups(self, patterns: list[str]) -> dict[str, str]:
        """Active units matching patterns -> their control group ("" when unknown)."""
        (rows,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ListUnitsByPatterns",
                                  "asas", [["active"], patterns])  # fmt: skip
        groups = {}
        for row in rows:
            properties = "org.freedesktop.DBus.Properties"
            (value,) = await self.call(SYSTEMD, row[6], properties, "Get", "ss",
                                       [f"{SYSTEMD}.Service", "ControlGroup"])  # fmt: skip
            groups[row[0]] = str(getattr(value, "value", ""))
        return groups

    async def main_pid(self, unit: str) -> int:
        """The unit's main process; 0 when it has none or is not loaded."""
        (rows,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ListUnitsByPatterns",
                                  "asas", [[], [unit]])  # fmt: skip
        for row in rows:
            if row[0] == unit:
                properties = "org.freedesktop.DBus.Properties"
                (value,) = await self.call(SYSTEMD, row[6], properties, "Get", "ss",
                                           [f"{SYSTEMD}.Service", "MainPID"])  # fmt: skip
                return int(value.value)
        return 0

    async def slice_usage(self, pattern: str) -> dict[str, tuple[int | None, int | None]]:
        """Loaded slices matching pattern -> (memory in bytes, CPU time in ns); None where
        systemd does not account it."""
        (rows,) = await self.call(SYSTEMD, SYSTEMD_PATH, MANAGER, "ListUnitsByPatterns",
                                  "asas", [[], [pattern]])  # fmt: skip
        usage = {}
        for row in rows:
            (values,) = await self.call(SYSTEMD, row[6], "org.freedesktop.DBus.Properties",
                                        "GetAll", "s", [f"{SYSTEMD}.Slice"])  # fmt: skip
            usage[row[0]] = (
                _accounted(values, "MemoryCurrent"),
                _accounted(values, "CPUUsageNSec"),
            )
        return usage

    async def user_sessions(self) -> dict[int, int]:
        """uid -> number of logind sessions."""
        (rows,) = await self.call(LOGIN, LOGIN_PATH, f"{LOGIN}.Manager", "ListSessions")
        counts: dict[int, int] = {}
        for _session, uid, *_rest in rows:
            counts[uid] = counts.get(uid, 0) + 1
        return counts


UNSET = (1 << 64) - 1  # systemd's "not accounted"


def _accounted(values: dict[str, Any], name: str) -> int | None:
    variant = values.get(name)
    value = getattr(variant, "value", None)
    return value if isinstance(value, int) and value != UNSET else None


def _trace_call(interface: str, member: str, body: list[Any] | None, outcome: str,
                started: float) -> None:  # fmt: skip
    if log.debugging():
        arguments = ", ".join(repr(a) for a in body or [])
        subject = f"{interface.removeprefix('org.freedesktop.')}.{member}({_shorten(arguments)})"
        log.trace("dbus", subject, outcome, started)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


async def _with_bus(action: Callable[[Bus], Awaitable[T]]) -> T:
    import sys

    # dbus-next's package imports its GLib backend, which loads PyGObject when installed
    # (~25 ms on the login path). Nothing here uses GLib: let that import fail fast.
    sys.modules.setdefault("gi", None)  # type: ignore[arg-type]
    from dbus_next.aio.message_bus import MessageBus
    from dbus_next.constants import BusType

    started = time.monotonic()
    try:
        connection = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except Exception as exc:  # noqa: BLE001 - dbus-next raises plain Exception on auth
        log.trace("dbus", "connect", f"error {exc}", started)
        raise BusError(f"cannot connect to the system bus: {exc}") from None
    log.trace("dbus", "connect", "ok", started)
    try:
        return await action(Bus(connection))
    finally:
        connection.disconnect()  # type: ignore[no-untyped-call]


def run(action: Callable[[Bus], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
    """Run `action(bus)` on a fresh system-bus connection, within timeout seconds."""

    async def bounded() -> T:
        try:
            return await asyncio.wait_for(_with_bus(action), timeout)
        except TimeoutError:
            raise BusError(f"no answer on the system bus within {timeout:g} s") from None

    return asyncio.run(bounded())
