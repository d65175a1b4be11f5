"""Test harness: the real firmware on the MicroPython unix port behind a real pty
(scripts/puck-sim), driven and observed from a test."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge_agent.puck import Puck

ROOT = Path(__file__).resolve().parents[2]

__all__ = ["Puck", "PuckSim", "Recorder", "wait_until"]


class PuckSim:
    def __init__(self, link: Path, *extra: str) -> None:
        self.link = link
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "puck-sim"), "--link", str(link), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: list[dict] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_for(lambda m: m.get("led") == "connecting", 15, "firmware boot")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.lines.append(msg)
                self._cond.notify_all()

    def wait_for(self, pred, timeout: float, what: str = "", start: int = 0) -> dict:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.lines[start:]:
                    if pred(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"sim: no {what or pred} within {timeout}s: {self.lines[-15:]}"
                    )
                self._cond.wait(left)

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def cmd(self, line: str, timeout: float = 15) -> dict:
        start = self.mark()
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        name = line.split()[0] if line.strip() else "press"
        return self.wait_for(lambda m: m.get("ok") == name, timeout, f"ok for {line!r}", start)

    def led(self) -> str | None:
        """The LED state the simulated board shows now."""
        start = self.mark()
        assert self.proc.stdin is not None
        self.proc.stdin.write("state\n")
        self.proc.stdin.flush()
        return self.wait_for(lambda m: "state" in m, 10, "state", start)["state"]

    def wait_led(self, state: str, timeout: float = 5, start: int | None = None) -> dict:
        return self.wait_for(
            lambda m: m.get("led") == state,
            timeout,
            f"led {state}",
            self.mark() if start is None else start,
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Recorder:
    """The agent's callbacks, recorded."""

    def __init__(self) -> None:
        self.cues: list[int] = []
        self.toggles = 0
        self.presence = 0
        self.consents = 0
        self.connection: list[bool] = []

    def on_cue(self, cue_id: int) -> None:
        self.cues.append(cue_id)

    def on_privacy_toggle(self) -> None:
        self.toggles += 1

    def on_presence_hold(self) -> None:
        self.presence += 1

    def on_consent(self) -> None:
        self.consents += 1

    def on_connection(self, up: bool) -> None:
        self.connection.append(up)


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
