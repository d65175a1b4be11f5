"""Updating the cue puck's firmware from the unit, over its USB link, with read-back
verification and a way back.

    1. ask the running firmware to reboot into its REPL (MAINTENANCE message on the link);
    2. write the new files; the puck computes each file's SHA-256 and the unit compares it
       with the release's (a write that does not verify is never booted);
    3. reset; the new firmware must come up and heartbeat on the link (both directions)
       within a deadline;
    4. otherwise write the previous firmware back (kept in the previous release's
       firmware/), verify it the same way, reset, and wait for its heartbeat.

The puck's filesystem is reached through `PuckFiles`: `MpremoteFiles` on a real Pico
(mpremote over the puck's USB serial port), `DirFiles` for the simulator, whose "flash"
is a directory (scripts/puck-sim --flash DIR) because the MicroPython unix port has no
REPL to talk to. The link parts (maintenance, heartbeat) are the same real protocol in
both. What only a real puck shows: that mpremote reaches the REPL after the MAINTENANCE
reboot, that files land in its flash and hash the same there, and that a firmware which
hangs before it reads the link can still be recovered (it cannot: that takes holding the
button at power-up, hardware/puck.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from scribelink import pucklink

log = logging.getLogger("edge_agent.puckflash")

NOT_DEPLOYED = ("board_sim.py",)  # the unix-port board: the simulator's, never the puck's
HEARTBEAT_TIMEOUT_S = 15.0


def firmware_files(firmware_dir: Path) -> dict[str, bytes]:
    """What the puck runs, from a release's firmware/ (the firmware with its protocol
    module beside it)."""
    files = {p.name: p.read_bytes() for p in sorted(Path(firmware_dir).glob("*.py"))
             if p.name not in NOT_DEPLOYED}
    if "main.py" not in files or pucklink.__name__.rsplit(".", 1)[-1] + ".py" not in files:
        raise FileNotFoundError(f"{firmware_dir} holds no puck firmware (main.py, pucklink.py)")
    return files


def digest(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}


class PuckFiles(Protocol):
    def put(self, name: str, data: bytes) -> None: ...
    def sha256(self, name: str) -> str | None: ...
    def reset(self) -> None: ...


class DirFiles:
    """The simulator's flash: a directory the unix-port firmware runs from. `reset` is
    the simulator's power cycle (its `reset` command)."""

    def __init__(self, flash_dir: Path, reset: Callable[[], None]) -> None:
        self.dir = Path(flash_dir)
        self._reset = reset

    def put(self, name: str, data: bytes) -> None:
        tmp = self.dir / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.dir / name)

    def sha256(self, name: str) -> str | None:
        try:
            return hashlib.sha256((self.dir / name).read_bytes()).hexdigest()
        except FileNotFoundError:
            return None

    def reset(self) -> None:
        self._reset()


class MpremoteFiles:
    """A real puck at its REPL, through mpremote (after a MAINTENANCE reboot)."""

    _HASH = ("import hashlib,binascii\ntry:\n h=hashlib.sha256()\n f=open({n!r},'rb')\n"
             " while True:\n  b=f.read(512)\n  if not b: break\n  h.update(b)\n f.close()\n"
             " print(binascii.hexlify(h.digest()).decode())\nexcept OSError:\n print('none')\n")

    def __init__(self, port: str, mpremote: str | None = None) -> None:
        import sys

        self.port = port
        beside = Path(sys.executable).parent / "mpremote"  # the release's own (unit extra)
        self.mpremote = mpremote or (str(beside) if beside.exists() else None) or \
            shutil.which("mpremote") or "mpremote"

    def _run(self, *args: str, timeout: float = 30.0) -> str:
        r = subprocess.run([self.mpremote, "connect", self.port, *args], capture_output=True,
                           text=True, timeout=timeout, check=False)
        if r.returncode != 0:
            raise OSError(f"mpremote {' '.join(args[:2])}: {r.stderr.strip()[-300:]}")
        return r.stdout

    def put(self, name: str, data: bytes) -> None:
        tmp = Path(f"/tmp/.puckflash-{os.getpid()}-{name}")
        tmp.write_bytes(data)
        try:
            self._run("fs", "cp", str(tmp), f":{name}")
        finally:
            tmp.unlink(missing_ok=True)

    def sha256(self, name: str) -> str | None:
        out = self._run("exec", self._HASH.format(n=name)).strip().splitlines()
        return None if not out or out[-1] == "none" else out[-1]

    def reset(self) -> None:
        self._run("reset")


# ---------------------------------------------------------------------------- the link


def request_maintenance(port: str, timeout_s: float = 3.0) -> bool:
    """Ask the running firmware to reboot into its REPL; True once it acknowledged."""
    import serial

    try:
        ser = serial.Serial(port, 115200, timeout=0.05)
    except (OSError, ValueError):
        return False
    link = pucklink.Link(int.from_bytes(os.urandom(4), "big"))
    start = time.monotonic()
    link.send_reliable(pucklink.MSG_MAINTENANCE, b"", 0)
    try:
        while time.monotonic() - start < timeout_s:
            now = int((time.monotonic() - start) * 1000)
            ser.write(link.poll(now))
            for ev in link.receive(ser.read(256), now):
                if ev.kind == pucklink.EV_ACKED and ev.mtype == pucklink.MSG_MAINTENANCE:
                    return True
    except (OSError, ValueError):
        return False  # the port went away under us: the puck is rebooting
    finally:
        try:
            ser.close()
        except OSError:
            pass
    return False


def wait_heartbeat(port: str, timeout_s: float = HEARTBEAT_TIMEOUT_S) -> bool:
    """True once a firmware on `port` heartbeats and hears us (the link works both ways)."""
    import serial

    deadline = time.monotonic() + timeout_s
    link = pucklink.Link(int.from_bytes(os.urandom(4), "big"))
    ser = None
    start = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if ser is None:
                try:
                    ser = serial.Serial(port, 115200, timeout=0.05)
                except (OSError, ValueError):
                    time.sleep(0.2)  # the port comes back after the reboot
                    continue
            now = int((time.monotonic() - start) * 1000)
            try:
                ser.write(link.poll(now))
                link.receive(ser.read(256), now)
            except (OSError, ValueError):
                ser.close()
                ser = None
                continue
            if link.connected(now):
                return True
        return False
    finally:
        if ser is not None:
            ser.close()


# ---------------------------------------------------------------------------- the update


@dataclass(frozen=True)
class FlashResult:
    result: str  # applied | rolled_back | failed | unchanged
    reason: str = ""
    running: dict | None = None  # name -> sha256 of what the puck runs now (None: unknown)

    def to_dict(self) -> dict:
        return {"result": self.result, "reason": self.reason, "running": self.running}


class PuckFlasher:
    def __init__(self, files: PuckFiles, *, enter_maintenance: Callable[[], bool],
                 heartbeat: Callable[[], bool]) -> None:
        self.files = files
        self.enter_maintenance = enter_maintenance
        self.heartbeat = heartbeat

    def _write_verified(self, files: dict[str, bytes]) -> str | None:
        """Write every file, then read each one's hash back; None if all match."""
        try:
            for name, data in sorted(files.items()):
                self.files.put(name, data)
            for name, want in digest(files).items():
                got = self.files.sha256(name)
                if got != want:
                    return f"{name} reads back as {(got or 'missing')[:12]}, not {want[:12]}"
        except OSError as e:  # no REPL to talk to (a real puck that wedged)
            return f"cannot reach the puck's files: {e}"
        return None

    def update(self, new: dict[str, bytes], previous: dict[str, bytes]) -> FlashResult:
        if digest(new) == digest(previous):
            return FlashResult("unchanged", running=digest(new))
        if not self.enter_maintenance():
            return FlashResult("failed", "the puck did not accept the maintenance request; "
                               "its firmware is unchanged", digest(previous))
        problem = self._write_verified(new)
        if problem is None:
            self.files.reset()
            if self.heartbeat():
                log.info("event=puck_firmware_applied files=%d", len(new))
                return FlashResult("applied", running=digest(new))
            problem = "the new firmware did not come up and heartbeat"
        log.warning("event=puck_firmware_failed reason=%s", json.dumps(problem))
        # the way back: the puck is at its REPL (a write failed) or fell into it (the new
        # firmware crashed); write the previous firmware and boot it
        back = self._write_verified(previous)
        if back is not None:
            return FlashResult("failed", f"{problem}; restoring the previous firmware failed "
                               f"too ({back}): reflash with scripts/flash-puck", None)
        self.files.reset()
        if not self.heartbeat():
            return FlashResult("failed", f"{problem}; the previous firmware was written back "
                               "but did not heartbeat either", digest(previous))
        return FlashResult("rolled_back", problem, digest(previous))
