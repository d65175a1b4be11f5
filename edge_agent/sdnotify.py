"""systemd service notification (sd_notify(3)) in pure stdlib: readiness, status, watchdog.

Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op that returns False, so the
agent runs the same under the unit, in tests and on a developer's machine.
"""

from __future__ import annotations

import os
import socket

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval_s"]


def _socket_address(raw: str) -> str | bytes | None:
    # "@name" is the Linux abstract namespace: the kernel wants a leading NUL byte.
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock ("vsock:CID:PORT") and relative paths are not used on a unit


def notify(message: str) -> bool:
    """Send one datagram of newline-separated KEY=VALUE assignments to the service manager.

    Returns True if it was sent, False if there is no manager to tell (or the socket is
    gone); never raises for those, because a missed notification must not stop capture.
    """
    address = _socket_address(os.environ.get("NOTIFY_SOCKET", ""))
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    """Start-up finished: systemd moves a Type=notify unit from 'activating' to 'active'."""
    return notify("READY=1")


def watchdog() -> bool:
    """Keep-alive; send at least every watchdog_interval_s() / 2 seconds."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """One-line status shown by `systemctl status` (no PHI: states and counts only)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def stopping() -> bool:
    """Orderly shutdown has begun (flushing the spool, closing the session)."""
    return notify("STOPPING=1")


def watchdog_interval_s() -> float | None:
    """The watchdog period systemd enforces on this process, in seconds, or None.

    systemd sets WATCHDOG_USEC (and WATCHDOG_PID); the value is meant for this process
    only if WATCHDOG_PID is absent or names our pid (a child must not feed it).
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    return value / 1_000_000
