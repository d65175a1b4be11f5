"""The unit's clinic rules (edge_agent.core), with no process, socket, device or sleep:
typed inputs in, typed effects out, the clock handed in. What the core seals is opened
with the scribe's key, so each rule is checked on what the scribe would receive."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent import core as c
from edge_agent.spool import Evicted
from scribelink import envelope as env
from scribelink import messages as msgs

RATE = 16000
CHUNK = 640  # 40 ms


class Unit:
    """A core with a hand-moved clock, the scribe's key, and everything it emitted."""

    def __init__(self, **settings) -> None:
        self.scribe = X25519PrivateKey.generate()
        counter = itertools.count(1)
        self.core = c.UnitCore(
            c.CoreSettings(unit_id="unit-t", channels=1, dsp_mode="off", **settings),
            rng=lambda n: next(counter).to_bytes(n, "big"))
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

    def assign(self) -> None:
        raw = env.public_key_raw(self.scribe)
        self.feed(c.AssignmentReceived(msgs.check_control(msgs.assignment(
            unit_id="unit-t", room="Exam 9", scribes=[("s1", raw)], issued_us=1))))

    def start_session(self) -> None:
        self.assign()
        self.tick()
        assert self.core.session is not None
        self.feed(c.CaptureOpened())

    def audio(self, seconds: float, value: int | None = None) -> np.ndarray:
        n = int(seconds * RATE)
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

    def key(self, session: str) -> bytes:
        if session not in self.keys:
            m = next(x for x in self.session_msgs("session_open") if x["session"] == session)
            wrapped = msgs.wrapped_key_for(m, env.key_id(env.public_key_raw(self.scribe)))
            self.keys[session] = env.unwrap_session_key(wrapped, self.scribe, "unit-t",
                                                        bytes.fromhex(session))
        return self.keys[session]

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
    assert u.core.session is None and u.lights() == ["idle"]  # no scribe, no session
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


def test_a_cue_is_sealed_once_however_often_the_puck_resends_it():
    u = Unit()
    u.start_session()
    u.feed(c.PuckCue(0xABC0001))
    u.feed(c.PuckCue(0xABC0001))  # the puck's retransmission
    u.feed(c.PuckCue(0xABC0002))
    assert [e.get("cue_id") for e in u.events() if e["kind"] == "cue"] == [0xABC0001, 0xABC0002]
    # remembered across a restart: the spool state carries the ids
    state = [e.state for e in u.of(c.Spool) if e.state and "cues_seen" in e.state][-1]
    again = c.UnitCore(c.CoreSettings(unit_id="unit-t"),
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
    other = X25519PrivateKey.generate()
    u.feed(c.AssignmentReceived(msgs.check_control(msgs.assignment(
        unit_id="unit-t", room="Exam 9", scribes=[("s1", env.public_key_raw(u.scribe)),
                                                  ("s2", env.public_key_raw(other))],
        issued_us=2))))
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
    status = u.of(c.PublishStatus)[-1].status
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
    assert first_after.capture_us - [h for h, _ in u.opened("audio")][0].capture_us == 8_000_000


def test_overruns_are_reported():
    u = Unit()
    u.start_session()
    u.feed(c.CaptureOverruns(3))
    u.advance(1.0)
    u.tick()
    status = u.of(c.PublishStatus)[-1].status
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


def test_status_goes_out_once_a_second():
    u = Unit()
    for _ in range(30):
        u.advance(0.1)
        u.tick()
    assert len(u.of(c.PublishStatus)) == 3


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
