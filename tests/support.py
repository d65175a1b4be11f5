"""Real parts for tests: a mosquitto broker with mTLS on a free loopback port, a local PKI,
the relay as a process, WAV helpers. Used by tests/conftest.py fixtures."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from cloud_relay import broker, pki
from cloud_relay.store.pgtemp import PgCluster  # noqa: F401 (tests/conftest.py)
from scribelink import tomlconf

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


@dataclass
class Broker:
    dir: Path
    port: int
    conf: Path
    pki: dict
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = broker.start(self.conf, self.port, self.dir / "mosquitto.log")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.dir / "mosquitto.pid"


# relay identities every test broker knows (one certificate each, named in the ACL)
RELAYS = ("relay", "relay-a", "relay-b")


def make_broker(tmp: Path, units: list[str]) -> Broker:
    p = pki.make_local_pki(tmp / "pki", units, relays=RELAYS)
    port = broker.free_port()
    conf = broker.write_config(tmp / "broker", port=port, ca=p["ca"], cert=p["broker"].cert,
                               key=p["broker"].key, crl=p["crl"], relay_identities=RELAYS)
    b = Broker(tmp / "broker", port, conf, p)
    b.start()
    return b


@dataclass
class Relay:
    dir: Path
    url: str
    config: Path
    proc: subprocess.Popen | None = None
    users: dict = field(default_factory=dict)

    def start(self) -> None:
        with open(self.dir / "relay.log", "ab") as log:  # the relay keeps its own copy
            self.proc = subprocess.Popen([PY, "-m", "cloud_relay", "serve", "--config",
                                          str(self.config)], stdout=log,
                                         stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 60  # a loaded CI machine starts Python slowly
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).json().get("broker"):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if self.proc.poll() is not None:
                raise RuntimeError((self.dir / "relay.log").read_text()[-2000:])
            time.sleep(0.1)
        raise RuntimeError("relay did not become healthy")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)

    def add_user(self, uid: str, role: str, password: str) -> None:
        pw = self.dir / f"{uid}.pw"
        pw.write_text(password)
        subprocess.run([PY, "-m", "cloud_relay", "add-user", "--config", str(self.config),
                        "--id", uid, "--name", uid, "--role", role, "--password-file", str(pw)],
                       check=True, cwd=ROOT, capture_output=True)
        self.users[uid] = password

    def token(self, uid: str) -> str:
        # (trust_env off, here and in every helper a test's background thread may call: the
        # relay is on loopback, and reading the environment's proxies iterates os.environ,
        # which pytest changes between tests; from another thread that raced, KeyError)
        r = httpx.post(self.url + "/api/login", json={"user": uid, "password": self.users[uid]},
                       trust_env=False)
        r.raise_for_status()
        return r.json()["token"]

    def api(self, method: str, path: str, uid: str = "admin", **kw) -> httpx.Response:
        return httpx.request(method, self.url + path,
                             headers={"Authorization": f"Bearer {self.token(uid)}"}, timeout=10,
                             trust_env=False, **kw)


def make_relay(tmp: Path, b: Broker, *, store_url: str = "", name: str = "relay",
               client_id: str = "relay", extra: str = "", start: bool = True,
               add_admin: bool = True) -> Relay:
    """A relay process. `store_url` empty: SQLite in its data dir; several relays given
    one PostgreSQL URL (or one SQLite file) share a store."""
    d = tmp / name
    d.mkdir(parents=True, exist_ok=True)
    port = broker.free_port()
    conf = d / "relay.toml"
    ident = b.pki["relays"][client_id]  # the broker takes the client id from the cert's CN
    conf.write_text(
        f'data_dir = "{d / "data"}"\nhttp_port = {port}\nbroker_url = "{b.url}"\n'
        f'broker_ca_file = "{b.pki["ca"]}"\nbroker_cert_file = "{ident.cert}"\n'
        f'broker_key_file = "{ident.key}"\n'
        f'ca_cert_file = "{b.pki["ca"]}"\nca_key_file = "{b.pki["ca_key"]}"\n'
        f'broker_crl_file = "{b.pki["crl"]}"\nbroker_pid_file = "{b.pid_file}"\n'
        f'store_url = "{store_url}"\nbroker_client_id = "{client_id}"\n'
        # the suite signs in thousands of times: a cheap hash (refused off loopback)
        'test_only_weak_password_hash = true\n' + extra
    )
    r = Relay(d, f"http://127.0.0.1:{port}", conf)
    if add_admin:
        r.add_user("admin", "admin", "admin-password")
    if start:
        r.start()
    return r


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> None:
    samples = np.asarray(samples, dtype="<i2")
    if samples.ndim == 1:
        samples = samples[:, None]
    with wave.open(str(path), "wb") as w:
        w.setnchannels(samples.shape[1])
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        x = np.frombuffer(w.readframes(w.getnframes()), "<i2")
        return x.reshape(-1, w.getnchannels())


def random_multichannel(seconds: float, channels: int = 4, seed: int = 1) -> np.ndarray:
    """Test input nobody tuned for: chirps, noise bursts and silence, per channel distinct."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    x = np.zeros((n, channels))
    for c in range(channels):
        f0 = rng.uniform(100, 400)
        x[:, c] = 0.3 * np.sin(2 * np.pi * (f0 + 300 * t) * t)
        x[:, c] += 0.05 * rng.standard_normal(n)
        x[rng.integers(0, n // 2): rng.integers(n // 2, n), c] *= rng.uniform(0, 1.5)
    return np.clip(x * 32767, -32768, 32767).astype("<i2")


def run_demo(args: list[str], timeout: float = 180,
             env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(ROOT / "scripts" / "demo"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def wrapped_key_for(open_msg: dict, key_id: str) -> bytes | None:
    """The session key as wrapped to the X25519 key `key_id` in a session_open (a dict as
    stored), or None: what a receiver picks before it unwraps."""
    return next((base64.b64decode(r["wrapped_key"]) for r in open_msg.get("recipients") or []
                 if r.get("key_id") == key_id), None)


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class UnitPublisher:
    """Publishes as a unit with that unit's certificate (a stand-in for the agent when a
    test must craft exact frames: tampered, forged, replayed)."""

    def __init__(self, b: Broker, unit_id: str, *, session_expiry_s: int = 0) -> None:
        import ssl
        import threading

        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.unit_id = unit_id
        self.acks = 0
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.control: list[bytes] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unit_id,  # = the cert's CN
                        protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(b.pki["ca"]))
        ctx.load_cert_chain(str(b.pki["units"][unit_id].cert), str(b.pki["units"][unit_id].key))
        c.tls_set_context(ctx)
        # connected once the broker holds the subscription (its SUBACK): a broker restarted
        # right after could otherwise persist the session without it
        c.on_connect = lambda *a: c.subscribe(f"sl/v1/unit/{unit_id}/control", 1)
        c.on_subscribe = lambda *a: self.connected.set()
        c.on_message = lambda cl, u, m: self.control.append(bytes(m.payload))
        if session_expiry_s:  # like the agent: a session that outlives the connection
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry_s
            c.connect("127.0.0.1", b.port, clean_start=False, properties=props)
        else:
            c.connect("127.0.0.1", b.port)
        c.loop_start()
        assert self.connected.wait(5)
        self.c = c

    def publish(self, leaf: str, payload: bytes) -> None:
        info = self.c.publish(f"sl/v1/unit/{self.unit_id}/{leaf}", payload, qos=1)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def start_scribe_client(tmp: Path, relay: Relay, uid: str,
                        *extra: str) -> tuple[subprocess.Popen, Path]:
    relay_clinic(relay)  # the clinic's authority is known before the client pins it
    d = tmp / f"scribe-{uid}"
    d.mkdir(parents=True, exist_ok=True)
    pw = d / "pw"
    pw.write_text(relay.users[uid])
    with open(d / "log", "ab") as log:  # the client keeps its own copy
        proc = subprocess.Popen(
            [PY, "-m", "cloud_relay.scribe_client", "--relay", relay.url, "--user", uid,
             "--password-file", str(pw), "--key", str(d / "key.pem"), "--wav", str(d / "out.wav"),
             "--events", str(d / "events.jsonl"), *extra],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    return proc, d


def wait_for(pred, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def archived_frames(data_dir, kind: str = "audio", *, store_url: str = "",
                    session: str | None = None, unit: str | None = None
                    ) -> list[tuple[str, int, bytes, int]]:
    """(session, seq, frame, received_us) of what a relay archived, by session and seq: rows
    and packed segments alike (docs/archive.md), read through the relay's Store."""
    from cloud_relay.store import Store

    st = Store.open(store_url, str(data_dir), pool_size=1)
    try:
        if session:
            sessions = [session]
        else:
            where, args = (" WHERE unit_id=?", (unit,)) if unit else ("", ())
            sessions = [r[0] for r in st.db.query(
                "SELECT session FROM sessions" + where + " ORDER BY opened_us", args)]
        return [(s, seq, payload, at) for s in sessions
                for _, seq, payload, at in st.sealed(s, kind, 0, 10**7)]
    finally:
        st.close(compact=False)


class TcpProxy:
    """A loopback TCP proxy the test can cut: `cut()` drops every connection and refuses
    new ones (the unit sees a dead network), `restore()` lets traffic through again."""

    def __init__(self, target_port: int, listen_port: int = 0) -> None:
        import socket
        import threading

        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", listen_port))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.upstream_bytes = 0  # client -> target, as forwarded (TLS records and all)
        self._conns: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), 2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, up), daemon=True).start()

    def _pipe(self, a, b, up: bool = False) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data or not self.up.is_set():
                    break
                b.sendall(data)
                if up:
                    self.upstream_bytes += len(data)  # one thread per direction and link
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        self.up.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self.listener.close()


class RelayClinic:
    """The clinic's admin with the clinic authority, in a test (docs/trust.md): registers
    the authority with the relay, endorses scribe devices as they register, signs
    assignments, and makes the keys enrolment leaves on a unit."""

    def __init__(self, relay: Relay) -> None:
        from trustkit import Clinic

        self.relay = relay
        self.clinic = Clinic()
        self.authority = self.clinic.authority
        r = relay.api("PUT", "/api/admin/authority",
                      json={"public_key": self.authority.public_b64()})
        r.raise_for_status()
        self.units: dict[str, object] = {}

    def endorse(self, user: str, timeout: float = 20.0) -> list[str]:
        """Wait for `user`'s device(s) to register, endorse them; returns their ids."""
        from trustkit import now_us

        from scribelink import trust

        deadline = time.monotonic() + timeout
        while True:
            pending = [d for d in self.relay.api("GET", "/api/admin/devices",
                                                 params={"pending": "true"}).json()
                       if d["user"] == user]
            for d in pending:
                st = self.authority.endorse_device(
                    scribe=user, enc_key=trust.unb64(d["enc_key"]),
                    sign_key=trust.unb64(d["sign_key"]), label=d["label"], kind=d["kind"],
                    now_us=now_us())
                self.relay.api("POST", "/api/admin/endorsements",
                               json={"statement": st.to_dict()}).raise_for_status()
            done = [d["device"] for d in self.relay.api(
                "GET", "/api/admin/devices", params={"pending": "false"}).json()
                if d["user"] == user]
            if done:
                return done
            if time.monotonic() > deadline:
                raise AssertionError(f"{user}'s device never registered")
            time.sleep(0.1)

    def assign(self, unit: str, scribes: list[str], room: str | None = None
               ) -> httpx.Response:
        from trustkit import now_us

        st = self.authority.assign(unit=unit, room=room, scribes=scribes, now_us=now_us())
        return self.relay.api("PUT", "/api/admin/assignments", json={"statement": st.to_dict()})

    def unit_keys(self, unit: str, directory: Path) -> dict[str, str]:
        """The [keys] settings enrolment leaves on a unit (signing key, binding, authority)."""
        keys = self.units.get(unit)
        if keys is None:
            keys = self.units[unit] = self.clinic.unit(unit)
        return keys.write(directory, self.authority)  # type: ignore[attr-defined]

    def unit_signer(self, unit: str):
        keys = self.units.get(unit)
        if keys is None:
            keys = self.units[unit] = self.clinic.unit(unit)
        return keys.signer  # type: ignore[attr-defined]


def relay_clinic(relay: Relay) -> RelayClinic:
    """The relay's clinic (made, and its authority registered, on first use)."""
    if getattr(relay, "_clinic", None) is None:
        relay._clinic = RelayClinic(relay)  # type: ignore[attr-defined]
    return relay._clinic  # type: ignore[attr-defined]


def keys_toml(keys: dict[str, str]) -> str:
    """The [keys] table's lines (after a `[keys]` header the caller writes)."""
    return tomlconf.dumps(keys)


def file_agent_toml(tmp: Path, b: Broker, unit: str, frames: int, keys: str) -> str:
    """A unit agent's config capturing 4 channels from the ALSA PCM "unit_mic" (the tests'
    `file` plugin), paced in real time, stopping after `frames`, PCM, dsp off, puck on the
    pty at tmp/puck; `keys`: keys_toml's [keys] body."""
    return (f'unit_id = "{unit}"\nstate_dir = "{tmp / "state"}"\n'
            '[capture]\ndevice = "unit_mic"\nchannels = 4\nperiod_frames = 320\n'
            f'[file_input]\npace_realtime = true\nstop_after_frames = {frames}\n'
            'resume_input = true\nexit_when_done = true\n'
            '[dsp]\nmode = "off"\n[codec]\ncodec = "pcm_s16le"\n[session]\nchunk_ms = 40\n'
            f'[spool]\ndir = "{tmp / "spool"}"\n'
            f'[broker]\nurl = "{b.url}"\nca_file = "{b.pki["ca"]}"\n'
            f'cert_file = "{b.pki["units"][unit].cert}"\n'
            f'key_file = "{b.pki["units"][unit].key}"\n'
            f'[puck]\nport = "{tmp / "puck"}"\n'
            '[keys]\n' + keys)


def client_device(d: Path, scribe: str):
    """(scribe, device id, X25519 public key) of a reference client's keys in `d`."""
    from cryptography.hazmat.primitives import serialization

    from scribelink import trust

    enc = serialization.load_pem_private_key((d / "key.pem").read_bytes(), None)
    sign = serialization.load_pem_private_key((d / "key.pem.sign").read_bytes(), None)
    return scribe, trust.key_id(trust.ed25519_raw(sign)), enc.public_key()  # type: ignore


def unit_session(relay: Relay, unit: str, devices: list, **kw):
    """A session as unit `unit` would open it: signed with the unit's bound key, wrapped to
    these devices ((scribe, device, X25519 key))."""
    from edge_agent.session import Session

    return Session(unit_id=unit, scribes=devices, recovery=None,
                   signer=relay_clinic(relay).unit_signer(unit),
                   sample_rate=kw.pop("sample_rate", 16000), chunk_ms=kw.pop("chunk_ms", 40),
                   started_us=kw.pop("started_us", 1), **kw)
