"""The reference receiver's rules (cloud_relay.receiver): authentication, replay rejection,
reordering, gaps, and that nothing the relay says is believed without the unit's
signature under a key the clinic authority bound to that unit. Pure: no process."""

from __future__ import annotations

import json
import resource

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from trustkit import Clinic

from cloud_relay.receiver import Receiver
from edge_agent.session import Signer, gap_message
from scribelink import messages as msgs
from scribelink import trust


def wire(m) -> dict:
    """As it arrives over the relay's WebSocket: JSON, with the relay's cursor added."""
    return {**json.loads(msgs.dumps(m)), "cursor": 7}


class Rig:
    def __init__(self, n_chunks: int = 10) -> None:
        self.clinic = Clinic()
        self.unit = self.clinic.unit("unit-a")
        self.dev = self.clinic.device("s1")
        self.s = self.clinic.session(self.unit, [self.dev])
        self.pcm = [np.full(640, i + 1, dtype=np.int16) for i in range(n_chunks)]
        self.frames = [self.s.seal_audio(p, 1_000_000 + i * 40_000)[1]
                       for i, p in enumerate(self.pcm)]
        self.audio: list[tuple[int, bytes]] = []
        self.records: list[dict] = []
        self.revoked = trust.Revocations()
        self.r = self.receiver(self.dev)

    def receiver(self, dev) -> Receiver:
        return Receiver(dev.enc, authority=self.clinic.public,
                        on_audio=lambda st, h, b: self.audio.append((h.seq, b)),
                        on_record=self.records.append, revocations=lambda: self.revoked)

    def open(self) -> None:
        self.r.session_item(wire(self.s.open_message()))

    def seqs(self) -> list[int]:
        return [q for q, _ in self.audio]

    def errors(self, kind: str) -> list[dict]:
        return [x for x in self.records if x["type"] == "error" and x["error"] == kind]


def test_in_order_stream_is_written_whole():
    g = Rig()
    g.open()
    for f in g.frames:
        g.r.envelope(f)
    assert g.seqs() == list(range(10))
    assert b"".join(b for _, b in g.audio) == b"".join(p.tobytes() for p in g.pcm)


def test_tampered_and_replayed_chunks_are_counted_and_the_stream_goes_on():
    g = Rig()
    g.open()
    bad = bytearray(g.frames[3])
    bad[-20] ^= 0x10
    for f in (g.frames[0], g.frames[1], g.frames[1], bytes(bad), g.frames[2], g.frames[0]):
        g.r.envelope(f)
    for f in g.frames[3:]:
        g.r.envelope(f)
    assert g.r.counters["tampered"] == 1 and g.r.counters["replayed"] == 2
    assert g.seqs() == list(range(10))


def test_out_of_order_chunks_are_reordered_and_early_chunks_wait_for_the_session():
    g = Rig()
    order = [5, 1, 0, 9, 3, 2, 8, 4, 7, 6]
    g.r.envelope(g.frames[order[0]])  # before the session_open: held, not rejected
    g.open()
    for i in order[1:]:
        g.r.envelope(g.frames[i])
    assert g.seqs() == list(range(10))


def test_a_signed_gap_lets_the_stream_continue_and_is_reported():
    g = Rig()
    g.open()
    g.r.envelope(g.frames[0])
    for f in g.frames[4:]:
        g.r.envelope(f)
    assert g.seqs() == [0]  # waits: 1..3 are missing, not declared
    g.r.session_item(wire(g.s.gap_message("audio", 1, 3, "spool_full", 2)))
    assert g.seqs() == [0, 4, 5, 6, 7, 8, 9]
    assert any(x["type"] == "gap" and x["first_seq"] == 1 for x in g.records)


def test_a_session_not_wrapped_for_this_device_is_refused():
    g = Rig()
    other = g.clinic.device("s1")
    r = g.receiver(other)
    r.session_item(wire(g.s.open_message()))
    r.envelope(g.frames[0])
    assert g.audio == [] and r.counters["not_for_me"] == 1


def test_a_device_that_joins_later_opens_the_session_from_its_first_chunk():
    g = Rig()
    laptop2 = g.clinic.device("s1", endorser=g.dev.sign)
    r = g.receiver(laptop2)
    r.session_item(wire(g.s.open_message()))  # not for it (yet)
    for f in g.frames[:4]:
        r.envelope(f)
    added, _ = g.s.add_recipients([("s1", laptop2.id, laptop2.enc.public_key())], 2_000_000)
    r.session_item(wire(added))
    for f in g.frames[4:]:
        r.envelope(f)
    assert g.seqs() == list(range(10))


def test_complete_only_after_the_signed_close_and_every_chunk():
    g = Rig(3)
    g.open()
    g.r.envelope(g.frames[0])
    g.r.envelope(g.frames[1])
    close = g.s.close_message(5_000_000, "input_complete")  # says last_audio_seq = 2
    g.r.session_item(wire(close))
    assert not [x for x in g.records if x["type"] == "session_complete"]
    g.r.envelope(g.frames[2])
    done = [x for x in g.records if x["type"] == "session_complete"]
    assert done and done[0]["samples"] == 3 * 640


def test_a_hole_that_stalls_the_stream_is_skipped_after_the_timeout():
    g = Rig()
    now = [0.0]
    g.r.clock, g.r.hole_timeout_s = (lambda: now[0]), 5.0
    g.open()
    g.r.envelope(g.frames[0])
    for f in g.frames[2:]:  # seq 1 is lost in transit, undeclared
        g.r.envelope(f)
    now[0] = 4.0
    g.r.tick()
    assert g.seqs() == [0]  # still waiting: it may yet come
    now[0] = 6.0
    g.r.tick()
    assert g.seqs() == [0, 2, 3, 4, 5, 6, 7, 8, 9] and g.r.counters["missing"] == 1


def test_a_draining_backlog_never_trips_the_hole_timeout():
    g = Rig()
    now = [0.0]
    g.r.clock, g.r.hole_timeout_s = (lambda: now[0]), 5.0
    g.open()
    g.r.envelope(g.frames[9])  # live arrives first...
    for i in range(9):  # ...the backlog trickles in, slower than the timeout in total
        now[0] += 3.0
        g.r.tick()
        g.r.envelope(g.frames[i])
    assert g.seqs() == list(range(10)) and g.r.counters["missing"] == 0


# ---------------------------------------------------------------------------- a hostile relay


def test_a_session_forged_by_the_relay_is_refused():
    """The relay holds the scribe's public key and the transport CA: it can seal a
    session "of unit-a" with words of its own, and sign it with a key of its own."""
    g = Rig()
    relay_key = Ed25519PrivateKey.generate()
    fake = g.clinic.session(g.unit, [g.dev])
    fake.signer = Signer(relay_key, g.unit.binding)  # a genuine binding, the wrong key
    g.r.session_item(wire(fake.open_message()))
    fake.signer = Signer(relay_key, None)  # or no binding at all
    g.r.session_item(wire(fake.open_message()))
    own = Clinic()  # or an authority of its own, binding its key to unit-a
    own_unit = own.unit("unit-a")
    forged = own.session(own_unit, [g.dev])
    g.r.session_item(wire(forged.open_message()))
    g.r.envelope(forged.seal_audio(np.full(640, 9, np.int16), 1)[1])
    assert g.audio == [] and g.r.counters["forged"] == 3


def test_an_edited_session_open_is_refused():
    g = Rig()
    d = wire(g.s.open_message())
    for field, value in (("room", "Exam 4"), ("sample_rate", 8000), ("started_us", 5)):
        g.r.session_item({**d, field: value})
    assert g.r.counters["forged"] == 3 and not g.r.sessions


def test_the_relay_cannot_inject_a_gap_or_cut_the_session_short():
    g = Rig()
    g.open()
    for f in g.frames[:3]:
        g.r.envelope(f)
    relay = Signer(Ed25519PrivateKey.generate(), None)
    g.r.session_item(wire(gap_message("unit-a", g.s.hex, "audio", 3, 8, "spool_full", 1,
                                      relay)))
    forged_close = {**wire(g.s.close_message(2, "ended")), "last_audio_seq": 2}
    g.r.session_item(forged_close)  # "the session ended after chunk 2"
    for f in g.frames[3:]:
        g.r.envelope(f)
    assert g.seqs() == list(range(10))  # nothing hidden as "unit loss", nothing cut
    assert g.r.counters["forged"] == 2
    assert not [x for x in g.records if x["type"] == "session_complete"]


def test_a_gap_over_two_to_the_sixty_two_chunks_allocates_nothing():
    """Even a signed gap is a range, never a set of sequence numbers."""
    g = Rig()
    g.open()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g.r.session_item(wire(g.s.gap_message("audio", 0, 2**40 - 1, "spool_age", 1)))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 50_000  # kB
    assert g.r.sessions[g.s.hex].next_audio == 2**40
    too_big = {**wire(g.s.gap_message("audio", 0, 5, "spool_age", 1)), "last_seq": 2**62}
    g.r.session_item(too_big)
    assert g.r.counters["malformed"] == 1


def test_a_revoked_units_sessions_are_refused():
    g = Rig()
    bound = trust.verify_binding(g.clinic.public, g.unit.binding)
    g.revoked = trust.verify_revocations(g.clinic.public, g.clinic.authority.revocations(
        serial=1, units=[{"unit": "unit-a", "sign_key_id": bound.key_id, "after_us": 0}],
        devices=[], now_us=1).to_dict())
    g.open()
    assert not g.r.sessions and g.r.counters["forged"] == 1
    assert "revoked" in g.errors("forged")[0]["detail"]


def test_an_event_the_unit_did_not_sign_is_refused():
    g = Rig()
    g.open()
    g.s.signer = Signer(Ed25519PrivateKey.generate(), g.unit.binding)  # not the bound key
    g.r.envelope(g.s.seal_event("cue", 5, cue_id=1)[1])
    assert g.r.counters["forged"] == 1
    assert not [x for x in g.records if x["type"] == "event"]
