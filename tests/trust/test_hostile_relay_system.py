"""A hostile relay against the real running system (issue 13, "What it must show"): the
tests' mosquitto, the relay process, the real unit agent (`python -m edge_agent run`, its
capture real alsa-lib through the `file` plugin, its puck the real firmware under
MicroPython via scripts/puck-sim) and the reference scribe client, which registers its
device, pins the clinic authority and verifies everything. The clinic's admin (the
authority, tests/support.RelayClinic) endorses the scribe's device and assigns the room.

The attacker holds what a relay operator holds: a relay identity at the broker (write
access to every unit's control topic), the relay's store, and a scribe's stolen bearer
token. The relay process itself holds the identity `relay`; the attacker speaks as
`relay-a`, another relay certificate the broker's ACL grants exactly the same rights
(taking the id `relay` would only evict the relay process: test_broker_adversaries.py).
With them it tries, in one agent run:
1. retained assignments on the unit's control topic that add its own X25519 key: an
   unsigned one and one signed by an "authority" of its own (with another scribe), and
   the genuine authority-signed assignment with device endorsements it made up for the
   assigned scribe -- before the unit starts (so the unit opens its session under it) and
   again mid-session (where a newly endorsed device would be added to the session);
2. registering its key as the scribe's device with the stolen token, and endorsing it as
   the scribe's "sibling" device;
3. faked cue acknowledgements after the physician presses the puck.
The unit wraps the session key to the scribe's endorsed device only (every session_open
and recipients_added the relay stored or the client saw; the attacker's private key
unwraps none), the scribe receives channel 0 sample for sample, and no faked
acknowledgement lights "seen" on the puck, while the scribe device's genuine one does."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import sqlite3
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import numpy as np
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from paho.mqtt.enums import CallbackAPIVersion
from puck_harness import PuckSim
from support import (
    Broker,
    Relay,
    UnitPublisher,
    archived_frames,
    client_device,
    file_agent_toml,
    jsonl,
    keys_toml,
    random_multichannel,
    read_wav,
    relay_clinic,
    start_scribe_client,
    wait_for,
)
from trustkit import now_us

from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import topics, trust

UNIT = "unit-a"
SECONDS = 10  # the encounter: every attack lands inside the session (about 1 s when idle)


class HostileRelay:
    """A relay identity at the broker (`relay-a`'s certificate): publishes on units'
    control topics, as the relay may."""

    def __init__(self, b: Broker) -> None:
        ident = b.pki["relays"]["relay-a"]
        self.connected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="relay-a",  # = the cert's CN
                        protocol=mqtt.MQTTv5)
        ctx = ssl.create_default_context(cafile=str(b.pki["ca"]))
        ctx.load_cert_chain(str(ident.cert), str(ident.key))
        c.tls_set_context(ctx)
        c.on_connect = lambda *a: self.connected.set()
        c.connect("127.0.0.1", b.port)
        c.loop_start()
        assert self.connected.wait(5), "the relay identity could not connect"
        self.c = c

    def control(self, msg: dict, *, retain: bool = False) -> None:
        info = self.c.publish(topics.control_topic(UNIT), msgs.dumps(msg), qos=1, retain=retain)
        info.wait_for_publish(5)
        assert info.is_published()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


class Attacker:
    """The relay operator's own keys: the X25519 key it wants sessions wrapped to, the
    Ed25519 key that names its "device", and an "authority" of its own."""

    def __init__(self) -> None:
        self.enc = X25519PrivateKey.generate()
        self.sign = Ed25519PrivateKey.generate()
        self.own_authority = Ed25519PrivateKey.generate()

    @property
    def enc_raw(self) -> bytes:
        return env.public_key_raw(self.enc)

    @property
    def key_id(self) -> str:  # what a recipient wrapped to this key is named by
        return env.key_id(self.enc_raw)

    @property
    def device(self) -> str:
        return trust.key_id(trust.ed25519_raw(self.sign))

    def device_body(self, scribe: str) -> dict:
        return trust.device_body(scribe=scribe, enc_key=self.enc_raw,
                                 sign_key=trust.ed25519_raw(self.sign), label="scribe laptop",
                                 issued_us=now_us())

    def made_up_endorsements(self, scribe: str, genuine: dict, authority_id: str) -> list[dict]:
        """Every way a relay could vouch for its key as `scribe`'s device."""
        body = self.device_body(scribe)
        forged_sig = self.sign.sign(trust.signed_bytes(trust.DEVICE, body))
        fake_parent = Ed25519PrivateKey.generate()
        parent_body = trust.device_body(scribe=scribe, enc_key=self.enc_raw,
                                        sign_key=trust.ed25519_raw(fake_parent),
                                        label="old laptop", issued_us=now_us())
        swapped = {**genuine, "body": {**genuine["body"], "enc_key": trust.b64(self.enc_raw)}}
        return [
            trust.sign(trust.DEVICE, body, self.sign).to_dict(),  # self-signed
            trust.sign(trust.DEVICE, parent_body, fake_parent).to_dict(),  # a made-up sibling
            trust.sign(trust.DEVICE, body, fake_parent).to_dict(),  # ...vouching for it
            # "signed by the authority": its key id, the attacker's signature
            {"t": trust.DEVICE, "body": body, "signer": authority_id,
             "sig": trust.b64(forged_sig)},
            {"t": trust.DEVICE, "body": body, "signer": authority_id,  # unsigned
             "sig": trust.b64(bytes(64))},
            {"t": trust.DEVICE, "body": body, "signer": authority_id},  # no signature at all
            swapped,  # the scribe's genuine endorsement, its X25519 key swapped for ours
        ]


def _agent_log(d: Path) -> str:
    p = d / "agent.log"
    return p.read_text(errors="replace") if p.exists() else ""


def _count(d: Path, event: str) -> int:
    return len(re.findall(rf"event={event}( |$)", _agent_log(d), re.M))


def _stored_session_messages(relay: Relay) -> list[dict]:
    """Every session_open and recipients_added the relay stored (its SQLite store)."""
    db = sqlite3.connect(f"file:{relay.dir / 'data' / 'relay.db'}?mode=ro", uri=True,
                         timeout=10)  # (WAL: reading beside the relay's writer)
    try:
        rows = db.execute("SELECT kind, payload FROM stream WHERE kind IN "
                          "('session_open', 'recipients_added') ORDER BY id").fetchall()
    finally:
        db.close()
    return [{**msgs.loads(bytes(p)), "_kind": k} for k, p in rows]


def _status(relay: Relay) -> dict:
    units = relay.api("GET", "/api/admin/units").json()
    return next(u for u in units if u["id"] == UNIT).get("status") or {}


def _forged_reply(session_key: bytes, session_hex: str, cue_id: int, device: str,
                  key: Ed25519PrivateKey) -> str:
    """A cue reply sealed under `session_key` that names `device` but is signed by `key`
    (trust.seal_reply always names the signing key's own device)."""
    body: dict = {"cue_id": cue_id, "reply": "seen", "device": device, "at_us": now_us()}
    body["sig"] = trust.sign_message(trust.REPLY_DOMAIN,
                                     {**body, "unit": UNIT, "session": session_hex}, key)
    nonce = os.urandom(12)
    ct = AESGCM(trust._reply_key(session_key)).encrypt(
        nonce, trust.canonical(body), trust._reply_aad(UNIT, session_hex))
    return trust.b64(nonce + ct)


def test_a_hostile_relay_gets_no_key_no_device_and_no_seen(tmp_path, broker, relay):
    x = random_multichannel(SECONDS, 4, seed=1313)
    raw = tmp_path / "in.raw"
    raw.write_bytes(x.tobytes())
    alsa = tmp_path / "asound.conf"
    system = Path("/usr/share/alsa/alsa.conf")
    alsa.write_text((f"<{system}>\n" if system.exists() else "")
                    + 'pcm.unit_mic {\n  type file\n  slave.pcm "null"\n  file "/dev/null"\n'
                    f'  infile "{raw}"\n  format "raw"\n}}\n')

    # the clinic: a scribe whose device the admin endorses, the room assigned to her
    relay.add_user("s1", "scribe", "s1-password-123")
    clinic = relay_clinic(relay)
    scribe, sd = start_scribe_client(tmp_path, relay, "s1", "--exit-when-complete")
    [s1_device] = clinic.endorse("s1")
    assert relay.api("POST", "/api/admin/units", json={"id": UNIT, "room": "Exam 2"}).is_success
    genuine = clinic.authority.assign(unit=UNIT, room="Exam 2", scribes=["s1"],
                                      now_us=now_us()).to_dict()
    relay.api("PUT", "/api/admin/assignments", json={"statement": genuine}).raise_for_status()
    s1_endorsement = next(d["endorsement"] for d in relay.api("GET", "/api/me/devices", "s1")
                          .json() if d["device"] == s1_device)
    _, _, s1_public = client_device(sd, "s1")
    s1_enc = serialization.load_pem_private_key((sd / "key.pem").read_bytes(), None)
    s1_sign = serialization.load_pem_private_key((sd / "key.pem.sign").read_bytes(), None)
    assert isinstance(s1_enc, X25519PrivateKey) and isinstance(s1_sign, Ed25519PrivateKey)

    evil = Attacker()
    s1_recipient = ("s1", s1_device, env.key_id(env.public_key_raw(s1_public)))

    def wrapped_to(m: dict) -> list[tuple[str, str, str]]:
        """Whom a session_open or recipients_added wraps the session key to; and the
        attacker's private key unwraps none of its copies."""
        for r in m["recipients"]:
            try:
                env.unwrap_session_key(base64.b64decode(r["wrapped_key"]), evil.enc, UNIT,
                                       bytes.fromhex(m["session"]))
            except env.OpenError:
                continue
            raise AssertionError("the attacker's key unwraps a copy of the session key "
                                 f"(wrapped for {r['id']}, device {r['device']})")
        return [(r["id"], r["device"], r["key_id"]) for r in m["recipients"]]

    authority_id = trust.key_id(clinic.authority.public_raw)
    forged_devices = evil.made_up_endorsements("s1", s1_endorsement, authority_id)

    def with_made_up_devices() -> dict:
        # 1b: the genuine authority-signed assignment, plus endorsements the relay made up
        return msgs.Assignment(unit=UNIT, assignment=genuine,
                               devices=(s1_endorsement, *forged_devices),
                               issued_us=now_us()).to_dict()

    hostile = HostileRelay(broker)
    # before the unit starts, the relay's retained assignment is replaced by the hostile
    # one: a stand-in with the unit's certificate watches the control topic until the
    # relay's own (published when the admin assigned) is followed by the hostile one
    watcher = UnitPublisher(broker, UNIT)
    try:
        wait_for(lambda: any(json.loads(m)["type"] == "assignment" for m in watcher.control),
                 15, "the relay's genuine assignment")
        first = with_made_up_devices()
        hostile.control(first, retain=True)
        wait_for(lambda: json.loads(watcher.control[-1]) == first, 10,
                 "the hostile assignment retained after the genuine one")
    finally:
        watcher.close()

    sim = PuckSim(tmp_path / "puck")
    conf = tmp_path / "agent.toml"
    conf.write_text(file_agent_toml(tmp_path, broker, UNIT, len(x), keys_toml(
        clinic.unit_keys(UNIT, tmp_path / "keys"))))
    with open(tmp_path / "agent.log", "wb") as log:  # the agent keeps its own copy
        agent = subprocess.Popen([sys.executable, "-m", "edge_agent", "run", "--config",
                                  str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                 env={**os.environ, "ALSA_CONFIG_PATH": str(alsa)},
                                 cwd=tmp_path)
    try:
        # 1b, at start: the unit takes the authority's assignment and skips every made-up
        # endorsement, with an alarm; its session is opened to the scribe's device alone
        wait_for(lambda: _count(tmp_path, "assignment") == 1, 30, "the unit's assignment")
        [opened] = wait_for(lambda: _stored_session_messages(relay), 10, "the session_open")
        assert wrapped_to(opened) == [s1_recipient], "wrapped to a key the relay made up"
        assert _count(tmp_path, "recipient_skipped") == len(forged_devices)
        assert re.search(r"event=assignment scribes=1 devices=1\b", _agent_log(tmp_path))
        sim.wait_led("live", 30, start=0)
        session_hex = opened["session"]
        session_key = env.unwrap_session_key(
            msgs.wrapped_key_for(opened, env.key_id(env.public_key_raw(s1_public))), s1_enc,
            UNIT, bytes.fromhex(session_hex))

        # 1a, mid-session: an unsigned assignment, and one signed by an "authority" of the
        # relay's own, each adding a scribe "mallory" whose device is the attacker's key
        body = trust.assignment_body(unit=UNIT, room="Exam 2", scribes=["s1", "mallory"],
                                     issued_us=now_us())
        own = trust.sign(trust.DEVICE, evil.device_body("mallory"), evil.own_authority)
        for statement in (
                {"t": trust.ASSIGNMENT, "body": body, "signer": authority_id,
                 "sig": trust.b64(bytes(64))},
                trust.sign(trust.ASSIGNMENT, body, evil.own_authority).to_dict()):
            before = _count(tmp_path, "assignment_rejected")
            hostile.control(msgs.Assignment(
                unit=UNIT, assignment=statement, devices=(s1_endorsement, own.to_dict()),
                issued_us=now_us()).to_dict(), retain=True)
            wait_for(lambda b=before: _count(tmp_path, "assignment_rejected") == b + 1, 10,
                     "the hostile assignment rejected")
        # 1b again, mid-session: a newly endorsed device would join the session
        # (recipients_added); made-up ones are skipped again, each of them
        assigned_before = _count(tmp_path, "assignment")
        hostile.control(with_made_up_devices(), retain=True)
        wait_for(lambda: _count(tmp_path, "assignment") == assigned_before + 1, 10,
                 "the hostile assignment taken mid-session")
        assert _count(tmp_path, "recipient_skipped") == 2 * len(forged_devices)

        # 2: the attacker's key registered as s1's device with s1's stolen bearer token
        stolen = relay.token("s1")
        auth = {"Authorization": f"Bearer {stolen}"}
        r = httpx.put(relay.url + "/api/me/device", headers=auth, timeout=10, json={
            "enc_key": trust.b64(evil.enc_raw), "sign_key": trust.b64(trust.ed25519_raw(
                evil.sign)), "label": "s1's new laptop", "kind": "person"})
        assert r.status_code == 200, r.text
        assert r.json()["device"] == evil.device and r.json()["endorsed"] is False
        # ...and vouched for by itself as s1's "sibling": refused (not an endorsed device)
        sibling = trust.sign(trust.DEVICE, evil.device_body("s1"), evil.sign).to_dict()
        r = httpx.post(relay.url + f"/api/me/devices/{evil.device}/endorsement", headers=auth,
                       timeout=10, json={"statement": sibling})
        assert r.status_code == 403, r.text
        pending = relay.api("GET", "/api/admin/devices", params={"pending": "true"}).json()
        assert [(d["device"], d["user"], d["endorsed"]) for d in pending] == \
            [(evil.device, "s1", False)]
        # the admin re-signs the room's assignment: the relay republishes it (with the
        # endorsed devices only) and the unit still holds one device of s1
        assigned_before = _count(tmp_path, "assignment")
        assert clinic.assign(UNIT, ["s1"], room="Exam 2").is_success
        wait_for(lambda: _count(tmp_path, "assignment") == assigned_before + 1, 10,
                 "the re-signed assignment")
        assert re.findall(r"event=assignment scribes=(\d+) devices=(\d+)",
                          _agent_log(tmp_path))[-1] == ("1", "1")
        # (each assignment handled in order: the mid-session one's effects are all out)
        assert _count(tmp_path, "recipients_added") == 0, "a made-up device joined the session"

        # 3: the physician presses the puck; the relay fakes the scribe's acknowledgement
        mark = sim.mark()
        sim.cmd("press")
        cue = wait_for(lambda: re.search(r"event=cue cue_id=(\d+)", _agent_log(tmp_path)), 10,
                       "the cue sealed by the unit")
        cue_id = int(cue.group(1))
        fakes = [
            # what a relay can make: no session key
            base64.b64encode(os.urandom(96)).decode(),
            trust.seal_reply(os.urandom(32), unit=UNIT, session_hex=session_hex, cue_id=cue_id,
                             reply="seen", at_us=now_us(), device_key=evil.sign),
            # more than a relay has (the session key): still not an endorsed device's reply
            trust.seal_reply(session_key, unit=UNIT, session_hex=session_hex, cue_id=cue_id,
                             reply="seen", at_us=now_us(), device_key=evil.sign),
            _forged_reply(session_key, session_hex, cue_id, s1_device, evil.sign),
        ]
        for sealed in fakes:
            hostile.control(msgs.CueAck(unit=UNIT, session=session_hex,
                                        sealed=sealed).to_dict())
        wait_for(lambda: _count(tmp_path, "cue_reply_rejected") == len(fakes), 10,
                 "every faked acknowledgement rejected")
        assert _count(tmp_path, "cue_reply") == 0
        # the clinic's IT is told, through the unit's status: forged endorsements and replies
        wait_for(lambda: {"bad_recipient_key", "cue_reply_rejected"}
                 <= set(_status(relay).get("alarms") or []), 10, "the unit's alarms")
        before_genuine = sim.mark()
        assert not [m for m in sim.lines[mark:before_genuine] if m.get("led") == "cue_seen"]
        # the scribe device's own reply (sealed and signed as its client does) lights it
        hostile.control(msgs.CueAck(unit=UNIT, session=session_hex, sealed=trust.seal_reply(
            session_key, unit=UNIT, session_hex=session_hex, cue_id=cue_id, reply="seen",
            at_us=now_us(), device_key=s1_sign)).to_dict())
        sim.wait_led("cue_seen", 10, start=before_genuine)
        assert re.findall(r"event=cue_reply cue_id=(\d+)", _agent_log(tmp_path)) == \
            [str(cue_id)]

        assert "session_close" not in _agent_log(tmp_path), "every attack landed in session"
        assert agent.wait(60) == 0
        assert scribe.wait(60) == 0
    finally:
        for proc in (agent, scribe):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(10)
        hostile.close()
        sim.close()

    # every session_open and recipients_added the relay stored, and the client saw
    stored = _stored_session_messages(relay)
    assert [(m["_kind"], wrapped_to(m)) for m in stored] == [("session_open", [s1_recipient])]
    seen = jsonl(sd / "events.jsonl")
    assert [e["devices"] for e in seen if e["type"] in ("session_open", "recipients_added")] \
        == [[s1_device]]
    # the archive is real: the session key, which only the scribe's device could unwrap, opens it
    frames = [f for _, _, f, _ in archived_frames(relay.dir / "data", session=session_hex)]
    assert len(frames) == SECONDS * 1000 // 40
    _, body0 = env.open_envelope(bytes(frames[0]), session_key)
    assert body0 == x[:640, 0].tobytes()
    # the genuine scribe heard channel 0 of the room, sample for sample
    got = read_wav(sd / "out.wav")[:, 0]
    assert np.array_equal(got, x[:, 0])
    counters = [e for e in seen if e["type"] == "counters"][-1]
    assert counters["forged"] == 0 and counters["tampered"] == 0 and counters["missing"] == 0
