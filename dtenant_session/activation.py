"""The listening socket systemd hands a service it starts on a first connection
(sd_listen_fds(3)): dtenant's authorization plugins and its check server."""

from __future__ import annotations

import os
import socket

SD_LISTEN_FDS_START = 3


def listening_socket(program: str) -> socket.socket:
    """The one socket systemd passed; the process exits naming `program` without it."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        raise SystemExit(f"{program}: expects exactly one socket from systemd (LISTEN_FDS)")
    listener = socket.socket(fileno=SD_LISTEN_FDS_START)
    listener.set_inheritable(False)  # into no child (the plugin's configuration reader)
    return listener
