"""Real parts for the provisioning tests (fixtures in conftest.py): a serial "cable" made of two real ptys joined
master to master (the unit's service opens one end, the tech's CLI the other), the
provisioning service as its own process, ALSA file-plugin capture devices, and the
simulated puck (the real firmware on MicroPython, scripts/puck-sim)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RATE = 16000


class Cable:
    """A null-modem cable between two ptys. `inject` writes straight into the unit's line
    (a noisy cable, a fuzzer); `tap` records every byte that crossed, for secret greps."""

    def __init__(self) -> None:
        self.m_unit, self._s_unit = pty.openpty()
        self.m_tech, self._s_tech = pty.openpty()
        for fd in (self._s_unit, self._s_tech):
            tty.setraw(fd)  # held open too, so a side closing never EIOs the master
        self.unit_path = os.ttyname(self._s_unit)
        self.tech_path = os.ttyname(self._s_tech)
        os.set_blocking(self.m_tech, False)
        self.tap = bytearray()
        self._unit_lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        pairs = {self.m_unit: self.m_tech, self.m_tech: self.m_unit}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select(list(pairs), [], [], 0.1)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    time.sleep(0.02)
                    continue
                self.tap += data
                if pairs[fd] == self.m_unit:
                    self.inject(data)
                else:
                    self._to_tech(data)

    def _to_tech(self, data: bytes) -> None:
        # nobody may be reading the tech end (no CLI running): like an unread UART, bytes
        # that do not fit are dropped rather than stalling the unit's writes
        view, give_up = memoryview(data), time.monotonic() + 0.05
        while view and time.monotonic() < give_up:
            try:
                view = view[os.write(self.m_tech, view):]
            except BlockingIOError:
                time.sleep(0.005)

    def inject(self, data: bytes) -> None:
        with self._unit_lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.m_unit, view):]

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        for fd in (self.m_unit, self.m_tech, self._s_unit, self._s_tech):
            try:
                os.close(fd)
            except OSError:
                pass


def write_alsa(tmp: Path, seconds: float = 30.0, channels: int = 4) -> Path:
    """ALSA config with two 4-channel file-plugin capture devices: `sl_good` (distinct
    noise and tones at about -30 dBFS on every channel) and `sl_dead3` (channel 3 dead)."""
    rng = np.random.default_rng(7)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    x = np.empty((n, channels))
    for c in range(channels):
        x[:, c] = 0.02 * np.sin(2 * np.pi * (220 + 90 * c) * t) + 0.02 * rng.standard_normal(n)
    good = np.clip(x * 32767, -32768, 32767).astype("<i2")
    dead = good.copy()
    dead[:, 2] = 0
    (tmp / "good.raw").write_bytes(good.tobytes())
    (tmp / "dead3.raw").write_bytes(dead.tobytes())
    system = Path("/usr/share/alsa/alsa.conf")
    conf = tmp / "asound.conf"
    body = f"<{system}>\n" if system.exists() else ""
    for name, raw in (("sl_good", "good.raw"), ("sl_dead3", "dead3.raw")):
        body += (f"pcm.{name} {{\n  type file\n  slave.pcm \"null\"\n  file \"/dev/null\"\n"
                 f"  infile \"{tmp / raw}\"\n  format \"raw\"\n}}\n")
    conf.write_text(body)
    return conf


class Service:
    """`python -m edge_agent provision-serve` as its own process on the cable's unit end."""

    def __init__(self, cable: Cable, state: Path, alsa_conf: Path, *, device: str = "sl_good",
                 puck_port: str | None = None, site: Path | None = None,
                 extra: list[str] | None = None) -> None:
        self.state = state
        self.log = state.parent / f"{state.name}-service.log"
        argv = [PY, "-m", "edge_agent", "provision-serve", "--port", cable.unit_path,
                "--state-dir", str(state), "--alsa-device", device, "--channels", "4",
                "--serial-number", "SN-TEST-0001", "--hw-rev", "B2", "--pace-realtime",
                "--puck-port", puck_port or ""]
        if site is not None:
            argv += ["--site-config", str(site)]
        self.proc = subprocess.Popen(argv + (extra or []), cwd=ROOT,
                                     stdout=open(self.log, "ab"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT,
                                     env={**os.environ, "ALSA_CONFIG_PATH": str(alsa_conf)})

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Until the service has the port open (pyserial flushes input on open, so a
        request sent earlier would be lost, as on a real unit still booting)."""
        wait_for(lambda: not self.alive() or "event=port_open" in self.log.read_text(),
                 timeout, "the service to open its port", 0.05)
        assert self.alive(), self.log.read_text()[-2000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def cli(cable: Cable, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The real tech tool, as the tech runs it."""
    return subprocess.run([PY, str(ROOT / "scripts" / "provision"), "--port", cable.tech_path,
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def cli_popen(cable: Cable, *args: str) -> subprocess.Popen:
    return subprocess.Popen([PY, str(ROOT / "scripts" / "provision"), "--port", cable.tech_path,
                             *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def info(cable: Cable) -> dict:
    r = cli(cable, "info", timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_for(pred, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


