"""A scripted exam-room unit for console tests: an honest participant of the trust model. Its
signing key is bound to its unit id under a grant of the test clinic's authority
(tests/trustkit.py); it checks the signed assignment and the device endorsements on its
control topic itself; it seals and signs with scribelink's own session code
(edge_agent.session.Session) and publishes through the real broker with the unit's own
certificate (mTLS), so the relay and the console see exactly what a unit sends. Used where
the agent cannot be told to produce an event on cue (a puck press, a privacy pause, a
declared gap)."""

from __future__ import annotations

import ssl
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from trustkit import Clinic, UnitKeys

from edge_agent.session import Session, gap_message
from scribelink import messages as msgs
from scribelink import topics, trust


def now_us() -> int:
    return time.time_ns() // 1000


class MqttUnit:
    """An MQTT client holding a unit's certificate and signing identity: publishes its
    uplink, reads its control topic and checks what it reads there."""

    def __init__(self, broker, unit_id: str, clinic: Clinic, *, room: str = "") -> None:
        self.unit_id = unit_id
        self.clinic = clinic
        self.authority = clinic.public
        self.keys: UnitKeys = clinic.unit(unit_id, room or unit_id)
        ident = broker.pki["units"][unit_id]
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{unit_id}-sim",
                        protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(broker.pki["ca"]))
        ctx.load_cert_chain(str(ident.cert), str(ident.key))
        c.tls_set_context(ctx)
        self.control: list[dict] = []
        self.control_at: list[float] = []
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(topics.control_topic(unit_id), 1),
                                                self._connected.set())
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", broker.port, keepalive=15)
        c.loop_start()
        self.client = c
        if not (self._connected.wait(10) and self._subscribed.wait(10)):
            raise RuntimeError(f"{unit_id}: could not connect and subscribe to the broker")

    def _on_message(self, client, userdata, message) -> None:
        self.control.append(msgs.loads(message.payload))
        self.control_at.append(time.time())

    def publish(self, leaf: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topics.unit_topic(self.unit_id, leaf), payload, qos=1,
                                   retain=retain)
        info.wait_for_publish(10)

    def devices(self, timeout: float = 10.0, *, at_least: int = 1) -> dict[str, trust.Device]:
        """The endorsed devices of the assigned scribes, from the newest assignment on the
        control topic that the authority signed (as a unit checks it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in reversed(self.control):
                if m.get("type") != "assignment" or not m.get("assignment"):
                    continue
                a = msgs.Assignment.from_dict(m)
                body = trust.verify_assignment(self.authority, a.assignment, self.unit_id)
                devs = trust.endorsed_devices(self.authority, list(a.devices))
                mine = {k: d for k, d in devs.items() if d.scribe in body["scribes"]}
                if len(mine) >= at_least:
                    return mine
                break
            time.sleep(0.05)
        raise TimeoutError(f"{self.unit_id}: no signed assignment with {at_least} endorsed "
                           "device(s) on the control topic")

    def acks(self) -> list[dict]:
        return [m for m in self.control if m.get("type") == "cue_ack"]

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class SimSession:
    """One session of a scripted unit: audio from an array, events when told, each signed."""

    def __init__(self, unit: MqttUnit, pcm: np.ndarray, *, room: str = "Exam 2",
                 chunk_ms: int = 40, sample_rate: int = 16000, codec=None,
                 consent: str = "not_required") -> None:
        self.devices = unit.devices()
        self.unit = unit
        self.pcm = np.asarray(pcm, dtype="<i2")
        self.chunk = sample_rate * chunk_ms // 1000
        self.started_us = now_us()
        self.session = Session(unit_id=unit.unit_id, scribes=self._recipients(self.devices),
                               recovery=None, signer=unit.keys.signer, sample_rate=sample_rate,
                               chunk_ms=chunk_ms, started_us=self.started_us, room=room,
                               codec=codec, consent=consent)
        self.key = self.session.key  # the test checks the relay never holds it
        self.pos = 0  # samples sent
        self.audio_clock_us = self.started_us
        self.cue_id = 0
        self.held: dict[int, bytes] = {}
        unit.publish(topics.SESSION, msgs.dumps(self.session.open_message()))
        self.event("session_start")

    @staticmethod
    def _recipients(devices: dict[str, trust.Device]):
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

        return [(d.scribe, d.device, X25519PublicKey.from_public_bytes(d.enc_key))
                for d in sorted(devices.values(), key=lambda d: (d.scribe, d.device))]

    @property
    def hex(self) -> str:
        return self.session.hex

    def join_new_devices(self, *, at_least: int = 1) -> int:
        """Devices endorsed since the session opened join it (a signed recipients_added),
        as the agent does. Returns how many joined."""
        self.devices = self.unit.devices(at_least=at_least)
        added, _errors = self.session.add_recipients(self._recipients(self.devices), now_us())
        if added is None:
            return 0
        self.unit.publish(topics.SESSION, msgs.dumps(added))
        return len(added.recipients)

    def status(self, capture: str = "live", spool_seconds: float = 0.0, online: bool = True,
               link: str = "up", consent: str | None = None) -> None:
        st = msgs.Status(unit=self.unit.unit_id, online=online, at_us=now_us(), link=link,
                         session=self.hex, capture=capture, consent=consent,
                         spool={"records": int(spool_seconds * 25), "bytes": 0,
                                "seconds": spool_seconds, "oldest_unsent_age_s": 0},
                         mics={"dead": [], "clipping": []})
        self.unit.publish(topics.STATUS, msgs.dumps(st), retain=True)

    def audio(self, seconds: float, *, pace: float = 1.0, skip_publish: set[int] | None = None,
              clock_us: int | None = None) -> list[int]:
        """Seal the next `seconds` of audio; pace 1.0 = real time, 0 = as fast as possible."""
        n = round(seconds * 1000 / (self.chunk * 1000 / 16000))
        seqs = []
        t0 = time.monotonic()
        if clock_us is not None:
            self.audio_clock_us = clock_us
        for i in range(n):
            block = self.pcm[self.pos:self.pos + self.chunk]
            if len(block) < self.chunk:
                break
            seq, sealed = self.session.seal_audio(block, self.audio_clock_us)
            self.audio_clock_us += self.chunk * 1_000_000 // 16000
            self.pos += self.chunk
            if not (skip_publish and seq in skip_publish):
                self.unit.publish(topics.AUDIO, sealed)
            else:
                self.held[seq] = sealed  # republish() sends it late
            seqs.append(seq)
            if pace:
                wait = t0 + (i + 1) * self.chunk / 16000 / pace - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        return seqs

    def republish(self, seq: int) -> None:
        """Send a chunk held back by `audio(skip_publish=...)`, late."""
        self.unit.publish(topics.AUDIO, self.held.pop(seq))

    def event(self, kind: str, **fields) -> tuple[int, int]:
        at = now_us()
        seq, sealed = self.session.seal_event(kind, at, **fields)
        self.unit.publish(topics.EVENT, sealed)
        return seq, at

    def cue(self) -> tuple[int, int]:
        self.cue_id += 1
        seq, _ = self.event("cue", cue_id=self.cue_id)
        return self.cue_id, seq

    def gap(self, first_seq: int, last_seq: int, reason: str = "spool_full") -> None:
        self.unit.publish(topics.SESSION, msgs.dumps(gap_message(
            self.unit.unit_id, self.hex, "audio", first_seq, last_seq, reason, now_us(),
            self.unit.keys.signer)))

    def replies(self) -> list[dict]:
        """The replies to this session's cues that reached the unit and hold, as the unit
        checks them: they open under the session key and a device that holds the session
        key signed them. Each: the reply's body plus the device's scribe and kind."""
        out = []
        for m in self.unit.acks():
            if m.get("session") != self.hex:
                continue
            try:
                body = trust.open_reply(self.key, unit=self.unit.unit_id, session_hex=self.hex,
                                        sealed=m["sealed"])
                dev = self.devices.get(str(body.get("device")))
                if dev is None or dev.device not in self.session.devices:
                    continue
                trust.verify_reply(body, unit=self.unit.unit_id, session_hex=self.hex, device=dev)
            except trust.TrustError:
                continue
            out.append({**body, "scribe": dev.scribe, "kind": dev.kind})
        return out

    def close(self, reason: str = "ended") -> None:
        self.event("session_end", reason=reason)
        self.unit.publish(topics.SESSION, msgs.dumps(self.session.close_message(now_us(),
                                                                                reason)))
