"""Real parts for the provisioning tests (fixtures in conftest.py): a serial "cable" made of
two real ptys joined master to master (the unit's service opens one end, the tech's CLI the
other), the provisioning service as its own process, ALSA file-plugin capture devices, and the
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
from typing import Self

import numpy as np

from edge_agent.provision import STAGING
from scribelink import provisioning as p
from scribelink import trust
from scribelink.authority import bind_unit

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RATE = 16000


class Cable:
    """A null-modem cable between two ptys. The unit's end (`unit_path`) stays for the
    cable's life, as the unit's service header does. The tech's end is the laptop's USB
    adapter: `tech_link` names it (a symlink, as udev gives the real one), `pull()` unplugs
    it (the device node goes, the tool's reads and writes fail) and `replug()` brings a new
    one back under the same name. `pull_when()` pulls it at an exact frame of the protocol.
    `inject` writes straight into the unit's line (a noisy cable, a fuzzer); `tap` records
    every byte that crossed, for secret greps."""

    def __init__(self, tmp: Path) -> None:
        self.m_unit, self._s_unit = pty.openpty()
        tty.setraw(self._s_unit)  # held open too, so the service closing never EIOs it
        self.unit_path = os.ttyname(self._s_unit)
        self.tech_link = tmp / "laptop-usb-serial"
        self.tap = bytearray()
        self.pulled = threading.Event()
        self.marked = threading.Event()
        self.m_tech = -1
        self._unit_lock = threading.Lock()
        self._tech_lock = threading.Lock()
        self._trigger: tuple | None = None
        self._to_unit, self._to_tech = p.Decoder(), p.Decoder()
        self._cmds: dict[int, str] = {}  # request id -> command, to name the answers
        self.replug()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    # -- plugging --

    def replug(self) -> None:
        with self._tech_lock:
            self.m_tech, self._s_tech = pty.openpty()
            tty.setraw(self._s_tech)
            os.set_blocking(self.m_tech, False)
            self.tech_path = os.ttyname(self._s_tech)
            tmp = self.tech_link.with_name(self.tech_link.name + ".tmp")
            tmp.unlink(missing_ok=True)
            os.symlink(self.tech_path, tmp)
            os.replace(tmp, self.tech_link)
            self._to_unit, self._to_tech = p.Decoder(), p.Decoder()
            self.pulled.clear()

    def pull(self) -> None:
        with self._tech_lock:
            if self.m_tech < 0:
                return
            self.tech_link.unlink(missing_ok=True)
            for fd in (self.m_tech, self._s_tech):
                os.close(fd)
            self.m_tech = -1
            self.pulled.set()

    def pull_when(self, direction: str, cmd: str, kind: int, when: str = "before") -> None:
        """Pull the cable at the first `kind` frame of `cmd` going `direction` ("to_unit"
        or "to_tech"): `before` it crosses (it is lost), or just `after` it crossed; or
        only `mark` that moment (the `marked` event) and leave the cable in."""
        self.marked.clear()
        self._trigger = (direction, cmd, kind, when)

    def _fire(self, direction: str, data: bytes) -> str | None:
        """-> None (pass the bytes on), "before" or "after" when the trigger is hit."""
        dec = self._to_unit if direction == "to_unit" else self._to_tech
        hit = None
        for f in dec.feed(data, time.monotonic()):
            if f.kind == p.KIND_REQUEST:
                self._cmds[f.request_id] = str(f.payload.get("cmd"))
            cmd = self._cmds.get(f.request_id)
            t = self._trigger
            if t and t[0] == direction and t[1] == cmd and t[2] == f.kind and hit is None:
                hit, self._trigger = t[3], None
        return hit

    # -- the wire --

    def _pump(self) -> None:
        while not self._stop.is_set():
            fds = [self.m_unit] + ([self.m_tech] if self.m_tech >= 0 else [])
            try:
                ready, _, _ = select.select(fds, [], [], 0.05)
            except (OSError, ValueError):
                continue  # the tech end went while we waited
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    time.sleep(0.02)
                    continue
                self.tap += data
                direction = "to_tech" if fd == self.m_unit else "to_unit"
                hit = self._fire(direction, data)
                if hit == "mark":
                    self.marked.set()
                if hit == "before":
                    self.pull()
                    continue
                if direction == "to_unit":
                    self.inject(data)
                else:
                    self._to_tech_write(data)
                if hit == "after":
                    self.pull()

    def _to_tech_write(self, data: bytes) -> None:
        # nobody may be reading the tech end (no CLI running, or unplugged): like an unread
        # UART, bytes that do not fit are dropped rather than stalling the unit's writes
        view, give_up = memoryview(data), time.monotonic() + 0.05
        with self._tech_lock:
            while view and self.m_tech >= 0 and time.monotonic() < give_up:
                try:
                    view = view[os.write(self.m_tech, view):]
                except BlockingIOError:
                    time.sleep(0.005)
                except OSError:
                    return

    def inject(self, data: bytes) -> None:
        with self._unit_lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.m_unit, view):]

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.pull()
        for fd in (self.m_unit, self._s_unit):
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
                 extra: list[str] | None = None, selftest_s: float = 2.0,
                 serial: str = "SN-TEST-0001") -> None:
        self.state = state
        self.log = state.parent / f"{state.name}-service.log"
        argv = [PY, "-m", "edge_agent", "provision-serve", "--port", cable.unit_path,
                "--state-dir", str(state), "--alsa-device", device, "--channels", "4",
                "--serial-number", serial, "--hw-rev", "B2", "--pace-realtime",
                "--puck-port", puck_port or "", "--selftest-seconds", str(selftest_s)]
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


def tool_env(cable: Cable, home: Path | None = None) -> dict:
    """The tool's environment on a tech's laptop: the cable found by discovery (a pty has
    no USB ids, so the candidate list is named), sign-ins and records in `home`."""
    env = {**os.environ, "SCRIBELINK_PROVISION_PORTS": str(cable.tech_link)}
    if home is not None:
        env.update(XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"))
    return env


def cli(cable: Cable, *args: str, timeout: float = 120, home: Path | None = None,
        ) -> subprocess.CompletedProcess:
    """The real tech tool, as the tech runs it (no --port: it finds the cable)."""
    return subprocess.run([PY, str(ROOT / "scripts" / "provision"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=tool_env(cable, home))


def cli_popen(cable: Cable, *args: str, home: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([PY, str(ROOT / "scripts" / "provision"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=tool_env(cable, home))


def info(cable: Cable) -> dict:
    r = cli(cable, "info", "--json", timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def snapshot(state: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under the state dir: relative path -> (mode, bytes)."""
    return {str(f.relative_to(state)): (f.stat().st_mode, f.read_bytes())
            for f in sorted(state.rglob("*")) if f.is_file()}


def committed(snap: dict) -> dict:
    """The unit's own files, without the fail-safe's staging area."""
    return {k: v for k, v in snap.items() if not k.startswith(STAGING + "/")}


def wait_for(pred, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)




def trust_args(clinic, gen: dict, unit_id: str, *, room: str = "Exam 2") -> dict:
    """What the tech's tool adds to install_cert: the binding of the unit's signing key
    (from generate_key's answer), signed with a fresh code's key under a grant of `clinic`'s
    authority (tests/trustkit.Clinic), and the authority the code names."""
    grant, secret = clinic.authority.grant(unit=unit_id, room=room, clinic="Northside",
                                           now_us=time.time_ns() // 1000)
    binding = bind_unit(grant, secret, trust.unb64(gen["sign_key"]), time.time_ns() // 1000,
                        gen["sign_key_type"])
    return {"binding": binding.to_dict(), "authority": clinic.authority.public_b64()}


def signed_in_laptop(tmp: Path, cable: Cable, relay, user: str = "tech1") -> Path:
    """A tech's laptop (its per-user dirs) signed in to the relay once: the tool remembers
    the session, never the password."""
    relay.add_user(user, "tech", f"{user}-password-1")
    (tmp / f"{user}.pw").write_text(f"{user}-password-1\n")
    home = tmp / f"laptop-{user}"
    r = cli(cable, "login", "--relay", relay.url, "--user", user, "--password-file",
            str(tmp / f"{user}.pw"), home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    return home


class Admin(threading.Thread):
    """The clinic's admin at the relay: signs each pending provisioning token request with
    the clinic authority (what `python -m scribelink.authority token --request R` does),
    and keeps what it signed."""

    def __init__(self, relay, clinic) -> None:
        super().__init__(daemon=True)
        self.relay, self.clinic = relay, clinic
        self.signed: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.relay.token('admin')}"}
        while not self.stop.wait(0.2):
            try:
                pending = httpx.get(self.relay.url + "/api/admin/token-requests",
                                    headers=headers, timeout=5).json()
            except (httpx.HTTPError, ValueError):
                continue
            for r in pending:
                if r.get("statement") is None:
                    self.signed.append(self.clinic.sign_token_request(self.relay, r["id"]))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.join(5)


def read_until(proc: subprocess.Popen, needle: str) -> list[str]:
    """The tool's stderr lines up to the one with `needle` (as the tech reads them)."""
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"the tool never said {needle!r}: {''.join(lines)}")
