"""The one way dtenant runs other programs.

argv lists only (never a shell), absolute program paths, a timeout on every call, and
errors that carry the command and what it printed on stderr.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Mapping, Sequence

from dtenant_session import log
from dtenant_session.errors import DtenantError

# Where programs are looked up: a fixed list, never the caller's PATH (a PAM hook gets
# none, and root must not run whatever a user's PATH points at).
SEARCH_PATH = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
DEFAULT_TIMEOUT = 60.0


class CommandError(DtenantError):
    """A command could not run, failed, or timed out."""

    def __init__(self, argv: Sequence[str], reason: str, stderr: str = "") -> None:
        self.argv = list(argv)
        self.reason = reason
        self.stderr = stderr
        super().__init__(self.describe())

    def describe(self) -> str:
        text = f"`{shlex.join(self.argv)}` {self.reason}"
        tail = self.stderr.strip()
        if tail:
            lines = tail.splitlines()[-5:]
            text += ": " + " | ".join(lines)
        return text


class Result:
    """What a command did. Not a dataclass: the pre-start check of every daemon runs nft
    through this module, and dataclasses costs it ~5 ms of imports."""

    __slots__ = ("argv", "returncode", "stderr", "stdout")

    def __init__(self, argv: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr

    def _key(self) -> tuple[list[str], int, str, str]:
        return self.argv, self.returncode, self.stdout, self.stderr

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # argv is a list

    def __repr__(self) -> str:
        return (f"Result(argv={self.argv!r}, returncode={self.returncode!r}, "
                f"stdout={self.stdout!r}, stderr={self.stderr!r})")  # fmt: skip


def which(name: str) -> str:
    """Absolute path of a program, searched in SEARCH_PATH only."""
    if name.startswith("/"):
        return name
    for directory in SEARCH_PATH:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK) and os.path.isfile(candidate):
            return candidate
    raise CommandError([name], f"not found in {':'.join(SEARCH_PATH)}")


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    input: str | bytes | None = None,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Result:
    """Run argv (argv[0] absolute); stdin gets `input` (text or bytes), output is text."""
    args = [str(a) for a in argv]
    if not args or not args[0].startswith("/"):
        raise ValueError(f"command must start with an absolute path: {args!r}")
    data = input.encode() if isinstance(input, str) else input
    started = time.monotonic()
    try:
        proc = subprocess.run(
            args,
            input=data,
            capture_output=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
            stdin=subprocess.DEVNULL if data is None else None,
        )
    except subprocess.TimeoutExpired as exc:
        error = CommandError(args, f"timed out after {timeout:g} s", _text(exc.stderr))
        _trace(args, error.reason, started)
        raise error from None
    except OSError as exc:
        error = CommandError(args, f"could not start: {exc.strerror}")
        _trace(args, error.reason, started)
        raise error from None
    result = Result(args, proc.returncode, _text(proc.stdout), _text(proc.stderr))
    _trace(args, _exit_outcome(result), started)
    if check and proc.returncode != 0:
        raise CommandError(args, f"failed with exit code {proc.returncode}", result.stderr)
    return result


def _exit_outcome(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    if result.returncode == 0 or not lines:
        return f"exit {result.returncode}"
    return f"exit {result.returncode}: {lines[-1]}"


def _trace(args: list[str], outcome: str, started: float) -> None:
    if log.debugging():
        log.trace("command", f"`{shlex.join(args)}`", outcome, started)


def _text(output: bytes | str | None) -> str:
    if output is None:
        return ""
    return output if isinstance(output, str) else output.decode(errors="replace")
