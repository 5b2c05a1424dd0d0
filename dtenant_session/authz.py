"""The tenant's Docker authorization plugin: every API request of the tenant's daemon
passes through it.

One plugin per tenant daemon (`dtenant-USER`), because a plugin cannot otherwise tell
whose request it sees (`User` is empty on unix sockets). Socket-activated by
dtenant-authz@USER.socket at /run/docker/plugins/dtenant-USER.sock; exits when idle and
comes back on the next connection. Protocol: POST /Plugin.Activate ->
{"Implements": ["authz"]}; /AuthZPlugin.AuthZReq and /AuthZPlugin.AuthZRes get the
request (and response) and answer {"Allow": bool, "Msg": str}, always with HTTP 200.
A plugin that is down means every request is denied: Docker fails closed.

The policy itself is policy.py; this module is the server around it. Every request also
counts as activity for the reaper, except the reaper's own. Standard library only: it
starts when the daemon starts.
"""

from __future__ import annotations

import json
import os
import re
import socket
import socketserver
import stat
import sys
import threading
import time
from collections.abc import Callable

from dtenant_session import activation, activity, log
from dtenant_session.dockerapi import REAPER_AGENT

# What the plugin imports is memory of every active tenant's, for as long as its daemon
# runs: typing only for the type checker, the configuration read in a child process
# (read_settings).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

IDLE_EXIT = 600.0  # seconds without a request before the plugin exits
# Touch the activity file at most this often: the reaper's last look before a stop reads
# it, so it must be far finer than reap.idle_timeout (1 s at least); a utime on /run costs
# microseconds against the milliseconds of a request.
ACTIVITY_EVERY = 0.2
MAX_HEAD = 64 << 10  # request line and headers
PLUGIN_TYPE = b"application/vnd.docker.plugins.v1+json"
MAX_BODY = 8 << 20  # Docker sends at most 1 MiB of body, base64-encoded, plus headers
# Requests larger than this are checked a few at a time: each holds its body several
# times over while parsed, and a tenant can send thousands at once. Small ones (every
# read, and the plugin's own lookups, which large ones wait for) never wait.
LARGE_REQUEST = 64 << 10
LARGE_AT_ONCE = 4

Decision = tuple[bool, str]
if TYPE_CHECKING:
    Policy = Callable[[dict[str, Any]], Decision]


def deny_all(reason: str) -> Policy:
    def deny(_request: dict[str, Any]) -> Decision:
        return False, f"dtenant: {reason}"

    return deny


def resolve(path: str) -> str:
    """Where a bind source really leads: the path cleaned as Docker cleans it, then every
    symlink of its existing part resolved (strictly: what cannot be resolved is an error,
    never a guess)."""
    cleaned = os.path.normpath(path)
    head, rest = cleaned, list[str]()
    while True:
        try:
            real = os.path.realpath(head, strict=True)
            break
        except FileNotFoundError:
            head, name = os.path.split(head)
            rest.insert(0, name)
    return os.path.join(real, *rest) if rest else real


def unavailable(user: str, why: PolicyUnavailable) -> Policy:
    """What a plugin without a policy does: deny everything, saying why."""
    return deny_all(f"the policy of {user} cannot be loaded ({why}); ask the administrator")


class PolicyUnavailable(Exception):
    pass


def build_policy(user: str) -> Policy:
    """The configured policy for user, or PolicyUnavailable saying why not."""
    finish = start_reading_settings(user)  # the child reads while the policy module loads
    from dtenant_session import policy

    found = finish()
    try:
        fields: dict[str, Any] = {key: tuple(value) if isinstance(value, list) else value
                                  for key, value in found["rules"].items()}  # fmt: skip
        rules = policy.Rules(**fields)
        tenant = policy.Tenant(user=user, home=found["home"], networks_pool=found["pool"],
                               bind_roots=tuple(found["roots"]))  # fmt: skip
    except (KeyError, TypeError, AttributeError) as exc:
        raise PolicyUnavailable(f"the configuration reader's answer lacks {exc}") from None
    look = policy.Lookups(resolve=resolve, container=lambda name: inspect(user, name),
                          containers=lambda: containers(user, rules.max_containers))  # fmt: skip

    reads = policy.KnownReads()

    def decide(request: dict[str, Any]) -> Decision:
        return policy.authorize(request, rules, tenant, look, reads)

    return decide


def policy_settings(user: str) -> dict[str, Any]:
    """What the policy needs of the configuration and the system: the [policy] rules,
    the user's home, the tenant's networks and its bind roots resolved. PolicyUnavailable
    saying why when it cannot be had. Runs in read_settings' child."""
    import pwd

    from dtenant_session import config, paths
    from dtenant_session.errors import DtenantError

    try:
        settings = config.load()
        home = os.path.realpath(pwd.getpwnam(user).pw_dir, strict=True)
        with open(f"{paths.TENANTS_DIR}/{user}/daemon.json") as stream:
            pool = json.load(stream)["default-address-pools"][0]["base"]
        roots = [resolve(root.replace("{home}", home).replace("{user}", user))
                 for root in settings.policy.bind_roots]  # fmt: skip
    except (DtenantError, OSError, KeyError, IndexError, ValueError, TypeError) as exc:
        raise PolicyUnavailable(str(exc)) from None
    rules = settings.policy.as_dict()
    return {"rules": rules, "home": home, "pool": pool, "roots": roots}


def print_settings(user: str) -> int:
    """The child's side of read_settings: one JSON object on stdout."""
    try:
        answer: dict[str, Any] = {"settings": policy_settings(user)}
    except PolicyUnavailable as exc:
        answer = {"unavailable": str(exc)}
    sys.stdout.write(json.dumps(answer))
    return 0


SETTINGS_TIMEOUT = 30.0  # seconds for the child to read the configuration
SETTINGS_MAX = 1 << 20
# The child: this module run by the same interpreter, as the plugin itself runs.
_CHILD = ("import sys; sys.path.insert(0, sys.argv[1]); from dtenant_session import authz; "
          "sys.exit(authz.print_settings(sys.argv[2]))")  # fmt: skip


def read_settings(user: str) -> dict[str, Any]:
    """policy_settings(user) computed in a child process, or PolicyUnavailable.

    Not in this process: the configuration's TOML parser, typing, dataclasses' helpers,
    pathlib and config.py itself (~2 MiB) would stay in the plugin's memory as long as
    its daemon runs, for a read at start and at each change of the configuration."""
    return start_reading_settings(user)()


def start_reading_settings(user: str) -> Callable[[], dict[str, Any]]:
    """read_settings in two steps: the child starts now; the function returned waits for
    its answer (PolicyUnavailable on failure), so the caller's own work overlaps it."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = [sys.executable, "-I", "-S", "-c", _CHILD, package_root, user]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    read_end, write_end = os.pipe()
    try:
        pid = os.posix_spawn(sys.executable, argv, environment,
                             file_actions=[(os.POSIX_SPAWN_DUP2, write_end, 1)])  # fmt: skip
    except OSError as exc:
        os.close(read_end)
        raise PolicyUnavailable(f"the configuration reader cannot start ({exc})") from None
    finally:
        os.close(write_end)
    return lambda: _settings_answer(read_end, pid)


def _settings_answer(read_end: int, pid: int) -> dict[str, Any]:
    try:
        output = _child_output(read_end, pid)
    finally:
        os.close(read_end)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        answer = json.loads(output)
    except ValueError:
        answer = None
    if status != 0 or not isinstance(answer, dict):
        raise PolicyUnavailable(f"the configuration reader failed (exit status {status})")
    if "unavailable" in answer:
        raise PolicyUnavailable(str(answer["unavailable"]))
    settings = answer.get("settings")
    if not isinstance(settings, dict):
        raise PolicyUnavailable("the configuration reader answered no settings")
    return settings


def _child_output(stream: int, pid: int) -> bytes:
    """What the child wrote, within SETTINGS_TIMEOUT and SETTINGS_MAX (killed beyond)."""
    import select
    import signal

    deadline = time.monotonic() + SETTINGS_TIMEOUT
    chunks: list[bytes] = []
    size = 0
    while (left := deadline - time.monotonic()) > 0 and size <= SETTINGS_MAX:
        if not select.select([stream], [], [], left)[0]:
            break
        chunk = os.read(stream, 64 << 10)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    os.kill(pid, signal.SIGKILL)
    return b""


CONFIG_CHECK_EVERY = 1.0  # seconds between two looks at the configuration's files
STAMP_READ_MAX = 1 << 20  # bytes of each file compared (dtenant.toml is a few KiB)


def configuration_stamp(user: str) -> tuple[tuple[object, ...], ...]:
    """The configuration's files and the tenant's daemon.json (its networks), what the
    policy is built from: when this changes, the administrator changed the policy."""
    from dtenant_session import paths

    try:
        names = sorted(n for n in os.listdir(paths.CONFIG_DROPINS) if n.endswith(".toml"))
    except OSError:
        names = []
    return tuple((path, *_file_stamp(path)) for path in (
        paths.CONFIG_FILE, paths.CONFIG_DROPINS,
        *(f"{paths.CONFIG_DROPINS}/{name}" for name in names),
        f"{paths.TENANTS_DIR}/{user}/daemon.json"))  # fmt: skip


def _file_stamp(path: str) -> tuple[object, ...]:
    """A file's inode, kind, owner and mode (config.py refuses a file others may write)
    and its content, compared whole: a rewrite just after a look may keep the size and
    time stamp (the file system's clock ticks every few ms), never the content."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return (exc.errno,)
    try:
        st = os.fstat(fd)
        regular = stat.S_ISREG(st.st_mode)
        content = os.read(fd, min(st.st_size + 1, STAMP_READ_MAX)) if regular else b""
    except OSError as exc:
        return (exc.errno,)
    finally:
        os.close(fd)
    return st.st_ino, st.st_mode, st.st_uid, st.st_gid, content


class ReloadingPolicy:
    """The tenant's policy, built again when the configuration changes: looked at once a
    second at most (a look reads a few files), so a change of policy decides every
    request made a second after it, at the latest. A change that cannot be built (a typo,
    a file only root may write) keeps the policy in force: the administrator's last valid
    one, never none; the journal says why. A plugin that never had a valid policy (it
    denies everything) tries again at every look: the plugin starts with its daemon,
    possibly before an administrator has put the tenant right."""

    def __init__(self, user: str) -> None:
        self.user = user
        self._lock = threading.Lock()
        self._stamp = configuration_stamp(user)
        try:
            self._policy, self._valid = build_policy(user), True
        except PolicyUnavailable as exc:
            self._policy, self._valid = unavailable(user, exc), False
        self._checked = time.monotonic()

    def _rebuild(self) -> None:
        try:
            self._policy, self._valid = build_policy(self.user), True
        except PolicyUnavailable as exc:
            if not self._valid:  # still none: it keeps denying, saying why as of now
                self._policy = unavailable(self.user, exc)
                return
            from dtenant_session import log

            reason = f"the new configuration cannot be used ({exc})"
            log.log(f"authorization plugin keeps its policy: {reason}",
                    priority=log.WARNING, user=self.user, step="authz")  # fmt: skip

    def __call__(self, request: dict[str, Any]) -> Decision:
        with self._lock:
            now = time.monotonic()
            if now - self._checked > CONFIG_CHECK_EVERY:
                self._checked = now
                stamp = configuration_stamp(self.user)
                if stamp != self._stamp or not self._valid:
                    self._stamp = stamp
                    self._rebuild()
            policy = self._policy
        return policy(request)


class CreateLedger:
    """Container creates allowed but not yet answered by the daemon: counted with the
    daemon's own count, so that a burst of concurrent creates cannot all pass the cap
    (each would see the count of before the others). Creates are checked one at a time;
    an entry ends with the daemon's answer (AuthZRes) or after PENDING_AT_MOST.

    The daemon's count (its /info, ~15 ms) is not asked at every create: the count at
    the last ask plus every create allowed since is an upper bound (removals only lower
    the real count), good for a create while it stays below the cap and for REASK_AFTER
    at most (containers the classic builder keeps are made without a create)."""

    PENDING_AT_MOST = 60.0
    REASK_AFTER = 30.0

    def __init__(self) -> None:
        self.checking = threading.Lock()  # held while a create is checked and recorded
        self._lock = threading.Lock()
        self._pending: list[float] = []
        self._bound: int | None = None  # the daemon's count + in flight, at the last ask
        self._asked = 0.0

    def in_flight(self) -> int:
        with self._lock:
            horizon = time.monotonic() - self.PENDING_AT_MOST
            self._pending = [t for t in self._pending if t > horizon]
            return len(self._pending)

    def bound(self) -> int | None:
        """At least as many containers as the daemon has and is creating; None when the
        daemon must be asked."""
        fresh = time.monotonic() - self._asked < self.REASK_AFTER
        return self._bound if fresh else None

    def counted(self, made: int) -> int:
        """The daemon counted made containers: with those in flight, the new bound."""
        in_flight = self.in_flight()
        with self._lock:
            self._bound, self._asked = made + in_flight, time.monotonic()
        return made + in_flight

    def allowed(self) -> None:
        with self._lock:
            self._pending.append(time.monotonic())
            if self._bound is not None:
                self._bound += 1

    def answered(self) -> None:
        with self._lock:
            if self._pending:
                self._pending.pop(0)


CREATES = CreateLedger()
# Method and URI lead Docker's AuthZRes message (Go encodes struct fields in order), so
# the answer to a create is known without parsing a response body of up to 1 MiB.
_POST = re.compile(rb'"RequestMethod":\s*"POST"')
_URI = re.compile(rb'"RequestUri":\s*"([^"]{0,4096})"')


def answers_a_create(message: bytes) -> bool:
    head = message[:8192]
    if not _POST.search(head):
        return False  # most answers: reads
    uri = _URI.search(head)
    return bool(uri and is_create("POST", uri.group(1).decode("latin-1")))


def is_create(method: str, uri: str) -> bool:
    from dtenant_session import policy

    return method.upper() == "POST" and policy.normalise(uri)[0] == "/containers/create"


def containers(user: str, cap: int) -> int:
    """How many containers the daemon has, running or not, and those it is creating: an
    upper bound while that stays below cap, the daemon's own count otherwise."""
    from dtenant_session import dockerapi

    bound = CREATES.bound()
    if bound is not None and bound < cap:
        return bound
    made = dockerapi.info_count(user, "Containers", agent=f"{REAPER_AGENT}/authz")
    return CREATES.counted(made)


def inspect(user: str, container: str) -> bytes:
    """The daemon's inspect of one of its containers (not the user's activity)."""
    import urllib.parse

    from dtenant_session import dockerapi

    quoted = urllib.parse.quote(container, safe="")
    return dockerapi.get(user, f"/containers/{quoted}/json", agent=f"{REAPER_AGENT}/authz")


class PluginServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, listener: socket.socket, user: str, policy: Policy) -> None:
        super().__init__("", Handler, bind_and_activate=False)
        self.socket = listener
        self.user = user
        self.policy = policy
        self.last_request = time.monotonic()
        self._last_touch = 0.0
        self._lock = threading.Lock()
        self.large_requests = threading.BoundedSemaphore(LARGE_AT_ONCE)

    def record_activity(self, headers: dict[str, Any]) -> None:
        self.last_request = time.monotonic()
        agent = " ".join(str(v) for k, v in headers.items() if k.lower() == "user-agent")
        if agent.startswith(REAPER_AGENT):
            return
        with self._lock:
            if self.last_request - self._last_touch < ACTIVITY_EVERY:
                return
            self._last_touch = self.last_request
        activity.touch(self.user)

    def answer(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON reply) for one call of the plugin protocol."""
        if path == "/Plugin.Activate":
            self.record_activity({})
            return 200, {"Implements": ["authz"]}
        if path == "/AuthZPlugin.AuthZReq":
            return 200, self.authorize(body)
        if path == "/AuthZPlugin.AuthZRes":
            if answers_a_create(body):
                CREATES.answered()
            return 200, PASSED
        return 404, {"Err": f"unknown endpoint {path}"}

    def authorize(self, body: bytes) -> dict[str, Any]:
        try:
            request = json.loads(body)
        except (ValueError, RecursionError):
            request = None
        if not isinstance(request, dict):
            return {"Allow": False, "Msg": "dtenant: malformed authorization request"}
        headers = request.get("RequestHeaders") or {}
        self.record_activity(headers if isinstance(headers, dict) else {})
        started = time.monotonic()
        try:
            if is_create(str(request.get("RequestMethod", "")), str(request.get("RequestUri", ""))):
                with CREATES.checking:
                    allowed, message = self.policy(request)
                    if allowed:
                        CREATES.allowed()
            else:
                allowed, message = self.policy(request)
        except Exception as exc:  # noqa: BLE001 - a request the policy did not foresee
            return {"Allow": False, "Msg": self.unforeseen(request, exc)}
        what = f"{request.get('RequestMethod')} {request.get('RequestUri')}"[:200]
        log.trace("decision", what, "allow" if allowed else f"deny: {message}", started,
                  user=self.user)  # fmt: skip
        return ALLOWED if allowed and not message else {"Allow": allowed, "Msg": message}

    def unforeseen(self, request: dict[str, Any], exc: BaseException) -> str:
        """Denied, and one line in the journal naming the request (never a traceback)."""
        from dtenant_session import log

        what = f"{request.get('RequestMethod')} {request.get('RequestUri')}"[:200]
        reason = f"{type(exc).__name__}: {exc}"[:300]
        log.log(f"denied {what}: the policy failed ({reason})", priority=log.ERR,
                user=self.user, step="authz")  # fmt: skip
        return f"dtenant: the request could not be checked ({type(exc).__name__}); denied"


class Requests:
    """The plugin protocol's requests on one connection, read into one buffer with as few
    system calls as the daemon's writes allow (a line-by-line reader costs more than the
    policy, twice per API request)."""

    RECEIVE = 64 << 10  # below malloc's mmap threshold: no fresh pages for every read

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = bytearray()

    def _more(self) -> bool:
        chunk = self.connection.recv(self.RECEIVE)
        self.buffer += chunk
        return bool(chunk)

    def head(self) -> bytes | None:
        """The request line and headers, without the blank line; None at the end."""
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEAD or not self._more():
                return None
        head = bytes(self.buffer[:end])
        del self.buffer[: end + 4]
        return head

    def body(self, length: int) -> bytes | None:
        while len(self.buffer) < length:
            if not self._more():
                return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body


def framing(head: bytes) -> tuple[str, int | None, bool]:
    """(path of a POST, Content-Length, whether to close) of a request's head; length None
    for framings not spoken here (chunked, a length that is not a number)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split()
    path = parts[1].decode("latin-1") if len(parts) == 3 and parts[0] == b"POST" else ""
    length: int | None = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"content-length":
            length = int(value) if value.isdigit() else None
        elif name == b"transfer-encoding":
            length = None
        elif name == b"connection":
            close = value.lower() == b"close"
    return path, length, close


# The two answers nearly every call gets, encoded once (see response()).
ALLOWED: dict[str, Any] = {"Allow": True, "Msg": ""}
PASSED: dict[str, Any] = {"Allow": True}  # AuthZRes: the daemon's answer goes back as it is


def response(status: int, payload: dict[str, Any], close: bool) -> bytes:
    if payload is ALLOWED and not close:
        return _ALLOWED_RESPONSE
    if payload is PASSED and not close:
        return _PASSED_RESPONSE
    return _encode(status, payload, close)


def _encode(status: int, payload: dict[str, Any], close: bool) -> bytes:
    data = json.dumps(payload).encode()
    reason = b"OK" if status == 200 else b"Error"
    connection = b"Connection: close\r\n" if close else b""
    head = b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
    return head % (status, reason, PLUGIN_TYPE, len(data), connection) + data


_ALLOWED_RESPONSE = _encode(200, ALLOWED, False)
_PASSED_RESPONSE = _encode(200, PASSED, False)


class Handler(socketserver.BaseRequestHandler):
    """HTTP/1.1 with keep-alive, only as much of it as Docker's plugin client speaks.

    Not http.server: its header parsing costs more than the policy; keep-alive spares a
    connect and a thread for each call."""

    server: PluginServer
    request: socket.socket

    def handle(self) -> None:
        requests = Requests(self.request)
        while (head := requests.head()) is not None:
            path, length, close = framing(head)
            if length is None or length > MAX_BODY:
                self.request.sendall(response(400, {"Err": "unsupported request framing"}, True))
                return
            if (body := requests.body(length)) is None:
                return
            if length > LARGE_REQUEST:
                with self.server.large_requests:
                    status, reply = self.server.answer(path, body)
            else:
                status, reply = self.server.answer(path, body)
            self.request.sendall(response(status, reply, close))
            if close:
                return


def serve(user: str, policy: Policy, idle_exit: float = IDLE_EXIT) -> None:
    server = PluginServer(activation.listening_socket("dtenant authz"), user, policy)

    def exit_when_idle() -> None:
        while time.monotonic() - server.last_request < idle_exit:
            time.sleep(min(idle_exit, 30.0))
        server.shutdown()

    threading.Thread(target=exit_when_idle, daemon=True).start()
    server.serve_forever(poll_interval=1.0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: authz USER", file=sys.stderr)
        return 2
    serve(argv[0], ReloadingPolicy(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
