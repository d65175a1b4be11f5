"""The unit's clinic rules (edge_agent.core), with no process, socket, device or sleep:
typed inputs in, typed effects out, the clock handed in. What the core seals is opened
with the scribe's key, so each rule is checked on what the scribe would receive."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent import core as c
from edge_agent.session import Signer
from edge_agent.spool import Evicted
from scribelink import codec as codecs
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import trust
from scribelink.authority import ClinicAuthority, bind_unit

PCM = codecs.CodecSettings(codec="pcm_s16le")  # the rules are checked sample for sample
RATE = 16000
CHUNK = 640  # 40 ms


class Scribe:
    """A scribe device: its keys, and the authority's endorsement of them."""

    def __init__(self, authority: ClinicAuthority, scribe: str = "s1", kind: str = "person",
                 signer: Ed25519PrivateKey | None = None) -> None:
        self.id = scribe
        self.enc = X25519PrivateKey.generate()
        self.sign = Ed25519PrivateKey.generate()
        body = trust.device_body(scribe=scribe, enc_key=env.public_key_raw(self.enc),
                                 sign_key=trust.ed25519_raw(self.sign), label="laptop",
                                 issued_us=1, kind=kind)
        self.endorsement = trust.sign(trust.DEVICE, body, signer or authority.key).to_dict()
        self.device = body["device"]


class Unit:
    """A core with a hand-moved clock, the authority, a scribe's device, and everything
    the core emitted."""

    def __init__(self, **settings) -> None:
        self.authority = ClinicAuthority.create()
        self.unit_key = Ed25519PrivateKey.generate()
        grant, secret = self.authority.grant(unit="unit-t", room="Exam 9", clinic="Test",
                                             now_us=1)
        binding = bind_unit(grant, secret, trust.ed25519_raw(self.unit_key), 1)
        self.dev = Scribe(self.authority)
        self.scribe = self.dev.enc
        counter = itertools.count(1)
        settings.setdefault("codec", PCM)
        self.core = c.UnitCore(
            c.CoreSettings(unit_id="unit-t", channels=1, dsp_mode="off", **settings),
            signer=Signer(self.unit_key, binding.to_dict()),
            authority=self.authority.key.public_key(),
            rng=lambda n: next(counter).to_bytes(n, "big"))
        self.issued = 1
        self.wall_us = 1_700_000_000_000_000
        self.mono = 1000.0
        self.effects: list = []
        self.keys: dict[str, bytes] = {}

    def now(self) -> c.Now:
        return c.Now(self.wall_us, self.mono)

    def advance(self, seconds: float) -> None:
        self.wall_us += int(seconds * 1e6)
        self.mono += seconds

    def feed(self, event) -> list:
        out = self.core.handle(event, self.now())
        self.effects.extend(out)
        return out

    def tick(self, link_up: bool = True, spool_empty: bool = False) -> list:
        return self.feed(c.Tick(c.Health(link_up=link_up, spool_empty=spool_empty)))

    def assignment(self, scribes: list[str], devices: list[dict], *,
                   revocations: dict | None = None, signer: ClinicAuthority | None = None
                   ) -> msgs.Assignment:
        self.issued += 1
        st = (signer or self.authority).assign(unit="unit-t", room="Exam 9", scribes=scribes,
                                               now_us=self.issued)
        return msgs.Assignment.from_dict(json.loads(msgs.dumps(msgs.Assignment(
            unit="unit-t", assignment=st.to_dict(), devices=tuple(devices),
            revocations=revocations, issued_us=self.issued))))

    def assign(self, *extra: Scribe) -> None:
        devs = [self.dev, *extra]
        self.feed(c.AssignmentReceived(self.assignment(sorted({d.id for d in devs}),
                                                        [d.endorsement for d in devs])))

    def start_session(self) -> None:
        self.assign()
        self.tick()
        assert self.core.session is not None
        self.feed(c.CaptureOpened())

    def audio(self, seconds: float, value: int | None = None,
              signal: np.ndarray | None = None) -> np.ndarray:
        n = int(seconds * RATE)
        if signal is not None:
            pcm = signal[:n].astype(np.int16)[:, None]
        else:
            pcm = (np.arange(n) % 3000 - 1500 if value is None else np.full(n, value)).astype(
                np.int16)[:, None]
        for i in range(0, n, 320):  # captured a period at a time, as ALSA delivers it
            self.advance(320 / RATE)
            self.feed(c.AudioCaptured(pcm[i:i + 320]))
        return pcm[:, 0]

    # -- what the scribe receives

    def records(self) -> list[c.Record]:
        return [r for e in self.effects if isinstance(e, c.Spool) for r in e.records]

    def session_msgs(self, kind: str) -> list[dict]:
        out = []
        for r in self.records():
            if r.kind == "session":
                m = json.loads(r.payload)
                if m["type"] == kind:
                    out.append(m)
        return out

    def key(self, session: str, device: Scribe | None = None) -> bytes:
        priv = (device or self.dev).enc
        if (session, id(priv)) not in self.keys:
            msgs_ = [msgs.session_message(x) for x in self.session_msgs("session_open")
                     + self.session_msgs("recipients_added") if x["session"] == session]
            kid = env.key_id(env.public_key_raw(priv))
            r = next(r for m in msgs_ for r in m.recipients if r.key_id == kid)
            self.keys[(session, id(priv))] = env.unwrap_session_key(
                r.wrapped(), priv, "unit-t", bytes.fromhex(session))
        return self.keys[(session, id(priv))]

    def opened(self, kind: str) -> list[tuple[env.Header, bytes]]:
        out = []
        for r in self.records():
            if r.kind == kind:
                out.append(env.open_envelope(r.payload, self.key(r.session)))
        return out

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.opened("event")]

    def pcm(self) -> np.ndarray:
        chunks = self.opened("audio")
        return np.concatenate([np.frombuffer(b, "<i2") for _, b in chunks]) if chunks else \
            np.zeros(0, np.int16)

    def lights(self) -> list[str]:
        return [e.state for e in self.effects if isinstance(e, c.ShowLight)]

    def of(self, kind) -> list:
        return [e for e in self.effects if isinstance(e, kind)]


def test_a_session_opens_on_assignment_and_seals_what_is_captured():
    u = Unit()
    u.feed(c.Start())
    u.tick()
    assert u.core.session is None and u.lights()[-1] == "idle"  # no scribe, no session
    u.start_session()
    assert len(u.of(c.OpenCapture)) == 1
    sent = u.audio(1.0)
    u.feed(c.Stop())
    assert np.array_equal(u.pcm(), sent)
    seqs = [h.seq for h, _ in u.opened("audio")]
    assert seqs == list(range(25))
    starts = [h.capture_us for h, _ in u.opened("audio")]
    assert np.diff(starts).tolist() == [40_000] * 24  # capture time from the sample clock
    assert [e["kind"] for e in u.events()] == ["session_start", "session_end"]
    assert u.session_msgs("session_close")[0]["reason"] == "agent_stopped"
    assert u.lights() == ["idle", "live", "idle"]


def test_a_session_the_relay_closes_is_followed_at_once_and_no_audio_falls_between():
    u = Unit()
    u.start_session()
    first = u.audio(0.4)
    u.feed(c.SessionControlReceived("close"))
    closes = u.session_msgs("session_close")
    assert [m["reason"] for m in closes] == ["closed_by_relay"]
    second = u.audio(0.4)  # captured before the next tick
    u.feed(c.Stop())
    opens = u.session_msgs("session_open")
    assert len(opens) == 2 and opens[0]["session"] != opens[1]["session"]
    assert np.array_equal(u.pcm(), np.concatenate([first, second]))


def test_a_cue_is_sealed_once_however_often_the_puck_resends_it():
    u = Unit()
    u.start_session()
    u.feed(c.PuckCue(0xABC0001))
    u.feed(c.PuckCue(0xABC0001))  # the puck's retransmission
    u.feed(c.PuckCue(0xABC0002))
    assert [e.get("cue_id") for e in u.events() if e["kind"] == "cue"] == [0xABC0001, 0xABC0002]
    # remembered across a restart: the spool state carries the ids
    state = [e.state for e in u.of(c.Spool) if e.state and "cues_seen" in e.state][-1]
    again = c.UnitCore(c.CoreSettings(unit_id="unit-t"), signer=u.core.signer, authority=None,
                       cues_seen=[int(x) for x in state["cues_seen"].split(",")])
    again.session = u.core.session
    assert not [e for e in again.handle(c.PuckCue(0xABC0001), u.now()) if isinstance(e, c.Spool)]


def test_a_cue_without_a_session_is_not_sealed():
    u = Unit()
    u.feed(c.PuckCue(5))
    assert u.records() == []
    assert any(isinstance(e, c.Log) and e.event == "cue_without_session" for e in u.effects)


def test_privacy_pause_drops_audio_at_the_source_and_keeps_capture_times_true():
    u = Unit()
    u.start_session()
    before = u.audio(0.4, value=7)
    u.feed(c.PrivacyToggle())
    u.audio(1.2, value=999)  # said during the pause: must exist nowhere
    u.feed(c.PrivacyToggle())
    after = u.audio(0.4, value=-7)
    u.feed(c.Stop())
    got = u.pcm()
    assert 999 not in got
    assert np.array_equal(got, np.concatenate([before, after]))
    headers = [h for h, _ in u.opened("audio")]
    first_after = next(h for h, b in u.opened("audio") if np.frombuffer(b, "<i2")[0] == -7)
    assert first_after.capture_us - headers[0].capture_us == 1_600_000  # 0.4 + 1.2 s later
    kinds = [e["kind"] for e in u.events()]
    assert kinds == ["session_start", "privacy_pause", "privacy_resume", "session_end"]
    pause = u.events()[1]
    assert pause["audio_seq"] == 10  # 0.4 s = 10 chunks sealed before it
    assert "paused" in u.lights()


def test_privacy_pause_ends_by_itself_when_the_clinic_sets_a_limit():
    u = Unit(privacy_auto_resume_s=5.0)
    u.start_session()
    u.feed(c.PrivacyToggle())
    u.advance(4.9)
    u.tick()
    assert u.core.privacy_paused
    u.advance(0.2)
    u.tick()
    assert not u.core.privacy_paused
    assert [e["kind"] for e in u.events()][-1] == "privacy_resume"


def test_a_session_left_open_by_a_crash_is_closed_at_start():
    u = Unit()
    stale = "ab" * 16
    u.feed(c.Start(stale_session=stale, stale_last_audio_seq=41, stale_last_event_seq=3))
    close = u.session_msgs("session_close")
    assert close == [{**close[0], "session": stale, "reason": "unit_restart",
                      "last_audio_seq": 41, "last_event_seq": 3}]
    assert u.of(c.Spool)[0].state == {"open_session": ""}


def test_new_recipients_close_the_session_and_the_next_opens_for_them():
    u = Unit()
    u.start_session()
    first = u.core.session.hex
    u.audio(0.2)
    u.assign(Scribe(u.authority, "s2"))  # a second scribe is assigned to the room
    assert u.core.session is None
    assert u.session_msgs("session_close")[0]["reason"] == "reassigned"
    u.tick()
    assert u.core.session is not None and u.core.session.hex != first
    assert len(u.session_msgs("session_open")[-1]["recipients"]) == 2


def test_capture_loss_shows_the_fault_declares_the_gap_and_recovers():
    u = Unit()
    u.start_session()
    before = u.audio(1.0, value=11)
    u.feed(c.CaptureFailed("reading 'mic' failed: No such device"))
    assert u.lights()[-1] == "fault"
    status = u.of(c.PublishStatus)[-1].status.to_dict()
    assert status["capture"] == "fault" and "No such device" in status["capture_error"]
    assert "capture_fault" in status["alarms"]
    # reopened with a backoff, never a busy loop: 0.5 s, then 1 s, then 2 s ...
    retries = []
    for _ in range(70):
        u.advance(0.1)
        for e in u.tick():
            if isinstance(e, c.OpenCapture):
                retries.append(round(u.mono - 1000.0, 1))
                u.feed(c.CaptureFailed("still gone"))
    assert retries == [1.5, 2.5, 4.5]  # the next would be at 8.5
    u.feed(c.CaptureOpened())  # plugged back in, 7 s after the loss
    assert u.lights()[-1] == "live"
    after = u.audio(1.0, value=-11)
    u.feed(c.Stop())
    gap = u.session_msgs("gap")
    assert len(gap) == 1 and gap[0]["reason"] == "capture_lost"
    assert (gap[0]["first_seq"], gap[0]["last_seq"]) == (25, 25 + 175 - 1)  # 7 s of chunks
    assert np.array_equal(u.pcm(), np.concatenate([before, after]))
    seqs = [h.seq for h, _ in u.opened("audio")]
    assert seqs == list(range(25)) + list(range(200, 225))  # nothing else missing
    first_after = [h for h, _ in u.opened("audio")][25]
    assert first_after.capture_us - next(h for h, _ in u.opened("audio")).capture_us == 8_000_000


def test_overruns_are_reported():
    u = Unit()
    u.start_session()
    u.feed(c.CaptureOverruns(3))
    u.advance(1.0)
    u.tick()
    status = u.of(c.PublishStatus)[-1].status.to_dict()
    assert status["capture_overruns"] == 3 and "capture_overrun" in status["alarms"]


def test_a_refused_spool_write_is_declared_as_a_gap_and_shows_the_fault():
    u = Unit()
    u.start_session()
    u.audio(0.2)
    refused = tuple(r for r in u.of(c.Spool)[-1].records)
    u.feed(c.SpoolRefused(refused, "No space left on device"))
    assert u.lights()[-1] == "fault"
    u.audio(0.2)  # the next write declares what was lost first
    gaps = [e for e in u.of(c.Spool) if e.send_direct_if_refused]
    gap = json.loads(gaps[-1].records[0].payload)
    assert (gap["type"], gap["reason"]) == ("gap", "spool_full")
    assert (gap["first_seq"], gap["last_seq"]) == (refused[0].seq, refused[-1].seq)
    u.feed(c.SpoolWritten())
    assert u.lights()[-1] == "live"


def test_evicted_records_become_declared_gaps_that_must_get_out():
    u = Unit()
    u.start_session()
    sid = u.core.session.hex
    u.feed(c.SpoolEvicted((Evicted(sid, "audio", 3, 9, 7, "spool_age"),)))
    spool = u.of(c.Spool)[-1]
    assert spool.send_direct_if_refused
    gap = json.loads(spool.records[0].payload)
    assert (gap["first_seq"], gap["last_seq"], gap["reason"]) == (3, 9, "spool_age")
    assert u.core.last_gap["reason"] == "spool_age"


def test_the_light_says_offline_recording_when_the_link_is_down():
    u = Unit()
    u.start_session()
    u.tick(link_up=False)
    assert u.lights()[-1] == "offline_recording"
    u.tick(link_up=True)
    assert u.lights()[-1] == "live"


def test_an_unchanged_status_goes_out_every_4_s_and_a_change_within_a_second():
    u = Unit()
    sent = []
    for _ in range(120):  # 12 s, all well: the first status, then one every 4 s
        u.advance(0.1)
        before = len(u.of(c.PublishStatus))
        u.tick()
        sent += [u.mono] * (len(u.of(c.PublishStatus)) - before)
    assert len(sent) == 3, sent
    assert all(4.0 <= b - a < 4.5 for a, b in itertools.pairwise(sent)), sent
    u.advance(0.5)
    u.tick(link_up=False)  # the link drops: said at the next look, not at the heartbeat
    u.advance(0.5)
    u.tick(link_up=False)
    assert len(u.of(c.PublishStatus)) == 4
    assert u.of(c.PublishStatus)[-1].status.link == "down"


def test_the_status_gist_ignores_what_moves_while_all_is_well():
    base = msgs.Status(unit="u", at_us=1, inflight=0,
                       spool={"records": 3, "bytes": 5000, "seconds": 0.12,
                              "oldest_unsent_age_s": 0.04})
    same = replace(base, at_us=2_000_000, inflight=2,
                   spool={"records": 1, "bytes": 7000, "seconds": 0.4,
                          "oldest_unsent_age_s": 0.3})
    assert c.status_gist(base) == c.status_gist(same)
    for changed in (replace(base, spool={**base.spool, "records": 0}),  # drained
                    replace(base, spool={**base.spool, "seconds": 2.0}),  # a backlog
                    replace(base, spool={**base.spool, "oldest_unsent_age_s": 1.6}),
                    replace(base, spool={**base.spool, "bytes": 2 << 20}),
                    replace(base, capture="live"), replace(base, link="down"),
                    replace(base, puck={"connected": True, "led": "live"}),
                    replace(base, alarms=("capture_fault",))):
        assert c.status_gist(changed) != c.status_gist(base), changed


def test_a_file_backed_input_stops_at_its_end_and_says_done_once_sent():
    u = Unit(stop_after_frames=RATE // 2, exit_when_done=True)
    u.start_session()
    u.audio(1.0)
    assert u.session_msgs("session_close")[0]["reason"] == "input_complete"
    assert len(u.pcm()) == RATE // 2
    u.tick(spool_empty=False)
    assert not u.of(c.Done)
    u.tick(spool_empty=True)
    assert len(u.of(c.Done)) == 1


# ---------------------------------------------------------------------------- trust rules


def test_everything_the_unit_says_is_signed_by_its_authority_bound_key():
    u = Unit()
    u.start_session()
    u.feed(c.PuckCue(7))
    u.audio(0.2)
    u.feed(c.SpoolEvicted((Evicted(u.core.session.hex, "audio", 1, 2, 2, "spool_age"),)))
    u.feed(c.Stop())
    opened = msgs.session_message(u.session_msgs("session_open")[0])
    bound = trust.verify_binding(u.authority.key.public_key(), opened.binding)
    assert bound.unit == "unit-t"
    for kind in ("session_open", "session_close", "gap"):
        for m in u.session_msgs(kind):
            trust.verify_message(kind, m, bound.sign_key)
    for h, body in u.opened("event"):
        ev = json.loads(body)
        trust.verify_message("event", {**ev, "session": h.session_hex, "seq": h.seq},
                             bound.sign_key)
    # an edited open (another room, other recipients) no longer verifies
    edited = {**u.session_msgs("session_open")[0], "room": "Exam 1"}
    import pytest
    with pytest.raises(trust.TrustError):
        trust.verify_message("session_open", edited, bound.sign_key)


def test_an_assignment_the_authority_did_not_sign_is_refused():
    u = Unit()
    relay = ClinicAuthority.create()  # the relay's own key, however it names it
    intruder = Scribe(relay, "s1")  # "another device of the scribe", endorsed by the relay
    u.feed(c.AssignmentReceived(u.assignment(["s1"], [u.dev.endorsement, intruder.endorsement],
                                             signer=relay)))
    u.tick()
    assert u.core.session is None and "assignment_rejected" in u.core.alarms
    # with the authority's assignment, the relay's extra device is still never wrapped to
    u.feed(c.AssignmentReceived(u.assignment(["s1"], [u.dev.endorsement,
                                                      intruder.endorsement])))
    u.tick()
    opened = msgs.session_message(u.session_msgs("session_open")[0])
    assert {r.device for r in opened.recipients if r.kind == "scribe"} == {u.dev.device}
    assert "bad_recipient_key" in u.core.alarms  # the forged endorsement was noticed


def test_an_older_assignment_cannot_roll_back_the_room():
    u = Unit()
    old = u.assignment(["s1"], [u.dev.endorsement])
    s2 = Scribe(u.authority, "s2")
    new = u.assignment(["s2"], [s2.endorsement])
    u.feed(c.AssignmentReceived(new))
    u.feed(c.AssignmentReceived(old))  # the relay replays last week's assignment
    assert u.core.assigned.scribes == ("s2",)
    assert "assignment_rejected" in u.core.alarms


def test_a_new_device_of_the_scribe_joins_the_running_session():
    u = Unit()
    u.start_session()
    first = u.core.session.hex
    u.audio(0.4, value=3)
    laptop2 = Scribe(u.authority, "s1", signer=u.dev.sign)  # endorsed by the first device
    u.assign(laptop2)
    assert u.core.session is not None and u.core.session.hex == first  # one session
    added = [msgs.session_message(m) for m in u.session_msgs("recipients_added")]
    assert len(added) == 1 and added[0].recipients[0].device == laptop2.device
    trust.verify_message("recipients_added", u.session_msgs("recipients_added")[0],
                         u.unit_key.public_key())
    # the new device opens the session from its first chunk
    key = u.key(first, laptop2)
    h, body = env.open_envelope(next(r.payload for r in u.records() if r.kind == "audio"), key)
    assert h.seq == 0 and np.frombuffer(body, "<i2")[0] == 3


def test_a_revoked_device_ends_the_session_and_is_left_out_of_the_next():
    u = Unit()
    laptop2 = Scribe(u.authority, "s1")
    u.assign(laptop2)
    u.tick()
    u.feed(c.CaptureOpened())
    first = u.core.session.hex
    rv = u.authority.revocations(serial=1, units=[], devices=[laptop2.device], now_us=5)
    u.feed(c.AssignmentReceived(u.assignment(["s1"], [u.dev.endorsement, laptop2.endorsement],
                                             revocations=rv.to_dict())))
    assert u.session_msgs("session_close")[0]["reason"] == "reassigned"
    u.tick()
    assert u.core.session.hex != first
    opened = msgs.session_message(u.session_msgs("session_open")[-1])
    assert {r.device for r in opened.recipients if r.kind == "scribe"} == {u.dev.device}


def test_a_low_order_key_is_skipped_with_an_alarm_and_capture_goes_on():
    u = Unit()
    body = {"scribe": "s1", "device": trust.key_id(bytes(range(32))),
            "enc_key": trust.b64(bytes(32)), "sign_key": trust.b64(bytes(range(32))),
            "label": "bad", "kind": "person", "issued_us": 1}
    bad = trust.sign(trust.DEVICE, body, u.authority.key).to_dict()
    u.feed(c.AssignmentReceived(u.assignment(["s1"], [bad, u.dev.endorsement])))
    u.tick()
    assert u.core.session is not None and "bad_recipient_key" in u.core.alarms
    u.feed(c.CaptureOpened())
    sent = u.audio(0.2)
    assert np.array_equal(u.pcm(), sent)


def reply(u: Unit, device: Scribe, cue_id: int, what: str = "seen", key: bytes | None = None):
    s = u.core.session
    sealed = trust.seal_reply(key or s.key, unit="unit-t", session_hex=s.hex, cue_id=cue_id,
                              reply=what, at_us=u.wall_us, device_key=device.sign)
    return c.CueAckReceived(msgs.CueAck(unit="unit-t", session=s.hex, sealed=sealed))


def test_only_a_person_holding_the_session_key_lights_seen():
    u = Unit()
    robot = Scribe(u.authority, "robot", kind="robot")
    u.assign(robot)
    u.tick()
    u.feed(c.PuckCue(42))
    u.feed(reply(u, u.dev, 42, "got_it"))
    assert u.of(c.PuckCueSeen) == [c.PuckCueSeen(42, "got_it")]
    u.feed(reply(u, robot, 42))  # the recorder's acknowledgement never lights the puck
    assert len(u.of(c.PuckCueSeen)) == 1
    # the relay cannot seal one (no session key), nor reuse a device's signature elsewhere
    u.feed(reply(u, u.dev, 43, key=bytes(32)))
    stranger = Scribe(ClinicAuthority.create(), "s1")
    u.feed(reply(u, stranger, 44))
    assert len(u.of(c.PuckCueSeen)) == 1 and "cue_reply_rejected" in u.core.alarms


# ---------------------------------------------------------------------------- the codec


def _config(codec: str, bitrate: int) -> msgs.Config:
    return msgs.Config.from_dict(msgs.Config(unit="unit-t", audio={"codec": codec,
                                                                   "bitrate": bitrate},
                                             issued_us=1).to_dict())


def test_an_opus_session_seals_whole_packets_that_decode_to_what_was_captured():
    u = Unit(codec=codecs.CodecSettings(codec="opus", bitrate=24000))
    u.start_session()
    t = np.arange(RATE) / RATE  # a voiced vowel: 140 Hz and its harmonics, pitch gliding
    f0 = 140 + 20 * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 25)) * 6000
    sent = u.audio(1.0, signal=voiced)
    u.feed(c.Stop())
    assert u.session_msgs("session_open")[0]["codec"] == "opus"
    chunks = u.opened("audio")
    assert [h.codec for h, _ in chunks] == [env.CODEC_OPUS] * 25
    assert {h.sample_count for h, _ in chunks} == {CHUNK}
    assert all(len(codecs.unpack_packets(b)) == 2 for _, b in chunks)  # two 20 ms packets
    bytes_per_s = sum(len(b) for _, b in chunks)
    assert 500 < bytes_per_s <= 24000 // 8 + 25 * 2 * 2  # at most 24 kb/s and the framing
    dec = codecs.OpusDecoder()
    got = np.concatenate([dec.decode(b, h.sample_count, h.seq).pcm for h, b in chunks])
    lag = 104  # the encoder's look-ahead at 16 kHz
    a, b = got[lag:].astype(float), sent[:-lag].astype(float)
    assert np.corrcoef(a, b)[0, 1] > 0.8  # the vowel comes out where it went in
    assert abs(10 * np.log10(np.mean(a ** 2) / np.mean(b ** 2))) < 2  # at its level


def test_the_relays_config_takes_over_and_a_running_session_restarts_with_it():
    u = Unit()  # the unit's own [codec]: PCM
    u.start_session()
    u.audio(0.2)
    first = u.core.session.hex
    u.feed(c.ConfigReceived(_config("opus", 16000)))
    assert u.of(c.SaveConfig)[-1].message.audio == {"codec": "opus", "bitrate": 16000}
    closes = u.session_msgs("session_close")
    assert [m["reason"] for m in closes] == ["reconfigured"] and closes[0]["session"] == first
    u.tick()
    u.feed(c.CaptureOpened())
    u.audio(0.2)
    opens = u.session_msgs("session_open")
    assert [m["codec"] for m in opens] == ["pcm_s16le", "opus"]
    audio = [(r.session, env.parse_header(r.payload)[0].codec) for r in u.records()
             if r.kind == "audio"]
    assert {cid for s, cid in audio if s == first} == {env.CODEC_PCM_S16LE}
    assert {cid for s, cid in audio if s != first} == {env.CODEC_OPUS}
    assert u.core.status(u.now()).audio == {"codec": "opus", "bitrate": 16000}
    # the same config again changes nothing; a bad one is refused and said
    n = len(u.session_msgs("session_close"))
    u.feed(c.ConfigReceived(_config("opus", 16000)))
    u.feed(c.ConfigReceived(_config("mp3", 16000)))
    assert len(u.session_msgs("session_close")) == n
    assert "relay config refused" in u.core.status(u.now()).last_error


def test_a_kept_config_applies_from_the_start_and_a_bad_one_falls_back():
    u = Unit()
    kept = c.UnitCore(c.CoreSettings(unit_id="unit-t", codec=PCM), signer=u.core.signer,
                      authority=None, config=_config("opus", 32000))
    assert (kept.codec.codec, kept.codec.bitrate) == ("opus", 32000)
    bad = c.UnitCore(c.CoreSettings(unit_id="unit-t", codec=PCM), signer=u.core.signer,
                     authority=None, config=msgs.Config(unit="unit-t", audio={
                         "codec": "opus", "bitrate": 10**6}))
    assert bad.codec == PCM


def test_a_unit_without_libopus_records_pcm_and_says_so(monkeypatch):
    # a stand-in for a unit image without libopus0 (this machine has it)
    monkeypatch.setattr(codecs, "opus_available", lambda: False)
    u = Unit(codec=codecs.CodecSettings(codec="opus"))
    u.start_session()
    sent = u.audio(0.4)
    u.feed(c.Stop())
    assert u.session_msgs("session_open")[0]["codec"] == "pcm_s16le"
    assert np.array_equal(u.pcm(), sent)
    assert "Opus unavailable" in u.core.status(u.now()).last_error


# ---------------------------------------------------------------------------- consent


def test_with_consent_required_nothing_is_captured_until_the_physicians_double_press():
    u = Unit(consent_required=True)
    u.assign()
    u.tick()
    s = u.core.session
    assert s is not None and not u.of(c.OpenCapture)  # the microphone is not even opened
    assert u.of(c.WantConsent) == [c.WantConsent(True)]  # the puck asks
    assert u.session_msgs("session_open")[0]["consent"] == "pending"
    status = u.core.status(u.now())
    assert (status.consent, status.capture) == ("pending", "idle")
    assert u.lights()[-1] == "idle"  # nothing recorded: the light does not say live
    u.audio(1.0)  # (a device left open would deliver this: it is dropped)
    u.feed(c.PuckCue(7))  # a cue is still a cue
    u.advance(2.0)
    consent_us = u.wall_us
    u.feed(c.PuckConsent())
    assert u.of(c.WantConsent)[-1] == c.WantConsent(False)
    assert len(u.of(c.OpenCapture)) == 1
    u.feed(c.CaptureOpened())
    sent = u.audio(1.0)
    u.tick()
    assert u.lights()[-1] == "live" and u.core.status(u.now()).consent == "given"
    u.feed(c.Stop())
    assert np.array_equal(u.pcm(), sent)  # only what came after consent
    first = u.opened("audio")[0][0]
    assert first.seq == 0 and first.capture_us >= consent_us
    ev = [e for e in u.events() if e["kind"] == "consent"]
    assert [(e["state"], e["by"]) for e in ev] == [("pending", "unit"), ("given", "physician")]
    assert ev[1]["audio_seq"] == 0
    # the consent events are the unit's, signed over the session and their sequence number
    key = trust.load_ed25519(trust.ed25519_raw(u.unit_key))
    for (h, body) in u.opened("event"):
        e = json.loads(body)
        trust.verify_message("event", {**e, "session": s.hex, "seq": h.seq}, key)


def test_a_declined_visit_captures_nothing_and_the_next_starts_with_a_press():
    u = Unit(consent_required=True)
    u.assign()
    u.tick()
    first = u.core.session.hex
    u.advance(3.0)
    n = len(u.effects)
    u.feed(c.PrivacyToggle())  # the privacy gesture while the ring asks: declined
    assert u.core.session is None and not u.of(c.OpenCapture)
    # said at once, not at the next status tick (the relay audits it; the console shows it)
    assert [e.status.consent for e in u.effects[n:] if isinstance(e, c.PublishStatus)] == [
        "declined"]
    close = u.session_msgs("session_close")[0]
    assert (close["reason"], close["last_audio_seq"]) == ("consent_declined", -1)
    assert u.core.status(u.now()).consent == "declined"
    for _ in range(5):  # no new session opens by itself
        u.advance(1.0)
        u.tick()
    assert u.core.session is None
    assert not [r for r in u.records() if r.kind == "audio"]
    ev = [e for e in u.events() if e["kind"] == "consent"]
    assert [(e["state"], e["by"]) for e in ev] == [("pending", "unit"), ("declined", "physician")]
    u.feed(c.PuckCue(99))  # the physician's press: the next visit
    assert not [e for e in u.events() if e["kind"] == "cue"]
    assert u.of(c.PuckCueNotSent) == [c.PuckCueNotSent(99)]  # the ring shows no cue waiting
    assert not u.of(c.PuckCueSeen)
    u.tick()
    assert u.core.session is not None and u.core.session.hex != first
    assert u.core.consent == "pending"


def test_a_scribe_confirming_the_read_back_records_consent_and_a_recorder_cannot():
    u = Unit(consent_required=True)
    robot = Scribe(u.authority, "robot", kind="robot")
    u.assign(robot)
    u.tick()
    u.feed(reply(u, robot, 0, "consent_given"))  # a recorder's word does not count
    assert u.core.consent == "pending" and not u.of(c.OpenCapture)
    u.feed(reply(u, u.dev, 0, "consent_given"))
    assert u.core.consent == "given" and len(u.of(c.OpenCapture)) == 1
    ev = [e for e in u.events() if e["kind"] == "consent"]
    assert (ev[-1]["state"], ev[-1]["by"]) == ("given", "scribe")
    u.feed(reply(u, u.dev, 0, "consent_declined"))  # too late: ignored, nothing changes
    assert u.core.consent == "given" and u.core.session is not None
    assert not u.of(c.PuckCueSeen)  # consent is not a reply to a cue
