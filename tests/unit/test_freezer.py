from __future__ import annotations

import signal
import subprocess
import sys

DEFERRED = """
import os, signal
from dtenant_session import freezer
with freezer._termination_deferred():
    os.kill(os.getpid(), signal.SIGTERM)
    print("thawing", flush=True)
print("went on", flush=True)
"""


def test_a_sigterm_during_a_freeze_ends_the_process_only_after_the_thaw() -> None:
    """`systemctl stop` of a pass in the middle of a last look must not leave the
    tenant's daemon frozen: the block's end (the thaw) runs first, then the process ends
    as SIGTERM would have ended it."""
    done = subprocess.run([sys.executable, "-c", DEFERRED], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.stdout.splitlines() == ["thawing"]
    assert done.returncode == -signal.SIGTERM
