"""systemd's notify protocol: a few datagrams to $NOTIFY_SOCKET, nothing when it is unset.

Written here rather than pulled in (python-systemd needs libsystemd headers to
build): the protocol is one `sendto` of newline-separated KEY=VALUE pairs.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("tickcast.live")


class Notifier:
    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        addr = env.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr:
            # '@' marks Linux's abstract socket namespace.
            self._addr = b"\0" + addr[1:].encode() if addr.startswith("@") else addr
        self.watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        if usec and (not pid or pid == str(os.getpid())):
            try:
                self.watchdog_s = int(usec) / 1_000_000
            except ValueError:
                log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, message: str) -> bool:
        if self._addr is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(message.encode(), self._addr)
            return True
        except OSError as e:
            # systemd going away must never take the daemon down with it.
            if not self._warned:
                log.warning("cannot notify systemd at %r: %s", self._addr, e)
                self._warned = True
            return False

    def ready(self, status: str = "") -> None:
        self.send("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def extend_start(self, seconds: float, status: str) -> None:
        """Still starting (a long store upgrade): systemd's start timeout moves to
        `seconds` from now instead of killing a start-up that is making progress."""
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}\nSTATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
