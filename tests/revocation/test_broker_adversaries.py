"""The threat model's broker-side adversaries against the real system (mosquitto, the relay
process, the reference scribe client; docs/trust.md, "What each adversary gets"):
- a clinic certificate connecting under another identity's client id (the relay's, another
  unit's), with a clean start: it evicts nobody, and nothing the relay should store is lost;
- a holder of the transport CA key: it mints a certificate for any unit id and the broker
  lets it in, but every session it makes up is refused by the receiver (no binding to the
  unit that chains to the clinic authority, or no signature of the bound key)."""

from __future__ import annotations

import signal

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from revocation_kit import UnitClient, enrol, mint
from support import (
    UnitPublisher,
    client_device,
    jsonl,
    relay_clinic,
    start_scribe_client,
    unit_session,
    wait_for,
)
from trustkit import Clinic, UnitKeys, now_us

from edge_agent.session import Session, Signer
from scribelink import messages as msgs
from scribelink import topics


def _frames(s: Session, first: int, n: int) -> list[bytes]:
    return [s.seal_audio(np.full(640, i, dtype=np.int16), 1 + i * 40_000)[1]
            for i in range(first, first + n)]


def _complete(d, session_hex: str):
    def done():
        if not (d / "events.jsonl").exists():
            return None
        rs = jsonl(d / "events.jsonl")
        return rs if any(r["type"] == "session_complete" and r["session"] == session_hex
                         for r in rs) else None
    return done


def test_another_identitys_client_id_evicts_nobody_and_loses_nothing(broker, relay, tmp_path):
    relay.add_user("s1", "scribe", "s1-password")
    clinic = relay_clinic(relay)
    assert relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "A"}).is_success
    proc, d = start_scribe_client(tmp_path, relay, "s1")
    clinic.endorse("s1")
    assert clinic.assign("unit-a", ["s1"]).is_success
    unit = UnitPublisher(broker, "unit-a", session_expiry_s=3600)
    s = unit_session(relay, "unit-a", [client_device(d, "s1")])
    frames = _frames(s, 0, 40)
    try:
        unit.publish("session", msgs.dumps(s.open_message()))
        for f in frames[:20]:
            unit.publish("audio", f)
        # unit-b's certificate asks for the relay's client id, then for unit-a's, each with
        # a clean start (which, were the id granted, would wipe that session and end its
        # connection), while unit-a goes on publishing
        impostors = []
        for asked in ("relay", "unit-a", "relay"):
            impostors.append(UnitClient(broker, broker.pki["units"]["unit-b"], asked))
            impostors[-1].c.connect("127.0.0.1", broker.port, clean_start=True)
            impostors[-1].c.loop_start()
            assert impostors[-1].connected.wait(5)
            for f in frames[20 + 5 * (len(impostors) - 1):20 + 5 * len(impostors)]:
                unit.publish("audio", f)
        for f in frames[35:]:
            unit.publish("audio", f)
        unit.publish("session", msgs.dumps(s.close_message(39, "input_complete")))
        records = wait_for(_complete(d, s.session_id.hex()), 20, "the session, complete")
        # each impostor was unit-b: the next one took the previous one over, nobody else
        assert [i.dropped.is_set() for i in impostors] == [True, True, False]
        assert unit.connected.is_set()
        for i in impostors:
            i.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        unit.close()
    got = [r for r in records if r.get("session") == s.session_id.hex()]
    assert not [r for r in got if r["type"] in ("gap", "error")], got
    assert any(r["type"] == "session_complete" for r in got)
    assert "broker_disconnected" not in (relay.dir / "relay.log").read_text()
    broker.stop()  # mosquitto's log is block-buffered until it stops
    log = (broker.dir / "mosquitto.log").read_text()
    assert "Client relay already connected" not in log
    assert "Client unit-a already connected" not in log
    assert log.count("Client unit-b already connected") == 2


def test_a_transport_ca_holder_gets_in_but_cannot_make_a_session_count(broker, relay, tmp_path):
    relay.add_user("s1", "scribe", "s1-password")
    clinic = relay_clinic(relay)
    proc, d = start_scribe_client(tmp_path, relay, "s1")
    clinic.endorse("s1")
    real = enrol(relay, broker, "exam-3", tmp_path / "real")
    assert clinic.assign("exam-3", ["s1"]).is_success
    device = client_device(d, "s1")

    # the transport CA's holder mints a certificate for exam-3: the broker lets it in
    fake = UnitClient(broker, mint(broker, "exam-3", tmp_path / "minted"), "exam-3").connect()
    own_key = Ed25519PrivateKey.generate()
    impostor_clinic = Clinic()  # an "authority" of its own, to grant itself the unit
    made_up = impostor_clinic.unit("exam-3")
    attempts = {
        # its own key with the real unit's binding: the signature is not the bound key's
        "stolen_binding": Signer(own_key, real.keys.binding),
        # its own key bound under a grant it signed itself: not the clinic authority's
        "own_authority": made_up.signer,
        # a binding of its own key, under its own grant, for the real unit id
        "own_binding": UnitKeys("exam-3", own_key, made_up.binding).signer,
    }
    forged: dict[str, str] = {}
    for what, signer in attempts.items():
        s = Session(unit_id="exam-3", scribes=[device], recovery=None, signer=signer,
                    sample_rate=16000, chunk_ms=40, started_us=now_us())
        forged[s.session_id.hex()] = what
        fake.publish(topics.unit_topic("exam-3", topics.SESSION), msgs.dumps(s.open_message()))
        for f in _frames(s, 0, 3):
            fake.publish(topics.unit_topic("exam-3", topics.AUDIO), f)
        fake.publish(topics.unit_topic("exam-3", topics.SESSION),
                     msgs.dumps(s.close_message(2, "input_complete")))
    fake.close()
    # the real unit, with the key the authority bound: its session counts
    unit = UnitClient(broker, real.tls, "exam-3").connect()
    genuine = Session(unit_id="exam-3", scribes=[device], recovery=None,
                      signer=real.keys.signer, sample_rate=16000, chunk_ms=40,
                      started_us=now_us())
    unit.publish(topics.unit_topic("exam-3", topics.SESSION),
                 msgs.dumps(genuine.open_message()))
    for f in _frames(genuine, 0, 3):
        unit.publish(topics.unit_topic("exam-3", topics.AUDIO), f)
    unit.publish(topics.unit_topic("exam-3", topics.SESSION),
                 msgs.dumps(genuine.close_message(2, "input_complete")))
    unit.close()
    try:
        # the stream is delivered in order: the forgeries were judged before it ended
        records = wait_for(_complete(d, genuine.session_id.hex()), 20, "the genuine session")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    for session, what in forged.items():
        mine = [r for r in records if r.get("session") == session]
        assert any(r["type"] == "error" and r["error"] == "forged" for r in mine), (what, mine)
        assert not any(r["type"] in ("session_open", "session_close", "session_complete")
                       for r in mine), (what, mine)
    assert sum(1 for r in records if r["type"] == "session_complete") == 1
