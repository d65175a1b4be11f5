"""The unit's clinic rules, I/O-free: what a unit does with each thing that happens.

`UnitCore.handle(event, now)` takes one typed input (an assignment arrived, the puck
sent a cue, a block of audio was captured, the capture device failed, a second passed)
and returns typed effects (spool these records, show this light, publish this status,
open the capture device). It reads no clock (the time comes in `now`), touches no file,
socket or thread, and draws randomness only from the `rng` it is given, so every rule --
session lifecycle, privacy pause and auto-resume, cue dedupe, gap declaration, stale
close, capture loss and recovery, the light -- is tested at full speed without a process.
`edge_agent/agent.py` is the thin runner that applies the effects to the real devices.

Concurrency: none. One thread (the agent's capture loop) calls `handle`; everything the
core holds is its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge_agent.chunker import Chunk, Chunker
from edge_agent.dsp import make_stage
from edge_agent.session import Session
from edge_agent.spool import seq_ranges
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import topics

STATUS_INTERVAL_S = 1.0
CUE_MEMORY = 64  # cue ids remembered across restarts (the puck retransmits a press)
CAPTURE_RETRY_S = (0.5, 1.0, 2.0, 4.0, 5.0)  # backoff while the capture device is gone
PAUSE_MARK_INTERVAL_S = 0.5

LIGHTS = ("idle", "live", "paused", "offline_recording", "fault")


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Now:
    """The two clocks: wall time (what records carry) and monotonic (what timers use)."""

    wall_us: int
    mono_s: float


@dataclass(frozen=True)
class Health:
    """What the adapters report about themselves, for the status and the light."""

    link_up: bool = False
    catching_up: bool = False
    inflight: int = 0
    spool: dict = field(default_factory=dict)
    uplink_error: str | None = None
    puck_connected: bool | None = None  # None: no puck configured
    spool_empty: bool = True


@dataclass(frozen=True)
class Start:
    """The agent started. `stale_session`: a session the last process left open."""

    stale_session: str | None = None
    stale_last_audio_seq: int = -1
    stale_last_event_seq: int = -1


@dataclass(frozen=True)
class Tick:
    health: Health


@dataclass(frozen=True)
class AssignmentReceived:
    assignment: dict  # a checked control message of type "assignment"


@dataclass(frozen=True)
class SessionControlReceived:
    action: str


@dataclass(frozen=True)
class CueAckReceived:
    cue_id: int


@dataclass(frozen=True)
class ReplayRequested:
    since_us: int


@dataclass(frozen=True)
class PuckCue:
    cue_id: int


@dataclass(frozen=True)
class PrivacyToggle:
    pass


@dataclass(frozen=True)
class AudioCaptured:
    block: np.ndarray  # (frames, channels) int16


@dataclass(frozen=True)
class CaptureOpened:
    pass


@dataclass(frozen=True)
class CaptureFailed:
    reason: str


@dataclass(frozen=True)
class CaptureOverruns:
    total: int  # overruns since the device was opened, as the adapter counts them


@dataclass(frozen=True)
class SpoolRefused:
    """The medium refused a Spool effect's records: nothing of it was written."""

    records: tuple[Record, ...]
    error: str


@dataclass(frozen=True)
class SpoolWritten:
    """A write went through after one was refused: the medium takes writes again."""


@dataclass(frozen=True)
class SpoolEvicted:
    """The spool had to drop unsent records (spool.Evicted items)."""

    evictions: tuple


@dataclass(frozen=True)
class Stop:
    pass


# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Record:
    """One message for the spool: `leaf` under the unit's topic, its payload, and the
    bookkeeping the spool keeps beside it."""

    leaf: str
    payload: bytes
    kind: str  # audio | event | session
    session: str | None = None
    seq: int | None = None
    audio_ms: int = 0
    input_end: int = 0  # input frames sealed once this record is in the spool


@dataclass(frozen=True)
class Spool:
    records: tuple[Record, ...]
    state: dict[str, str] | None = None
    # a declared gap must get out even when the spool cannot take it: send from memory
    send_direct_if_refused: bool = False


@dataclass(frozen=True)
class ShowLight:
    state: str


@dataclass(frozen=True)
class PuckCueSeen:
    cue_id: int


@dataclass(frozen=True)
class PublishStatus:
    status: dict


@dataclass(frozen=True)
class SaveAssignment:
    assignment: dict


@dataclass(frozen=True)
class OpenCapture:
    skip_input_frames: int = 0  # file-backed input: frames already sealed


@dataclass(frozen=True)
class CloseCapture:
    pass


@dataclass(frozen=True)
class Replay:
    since_us: int


@dataclass(frozen=True)
class Log:
    """A structured log line (key=value, no PHI)."""

    level: str
    event: str
    fields: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Done:
    """Headless runs: the input is complete and everything is sent; the agent may exit."""


Effect = (Spool | ShowLight | PuckCueSeen | PublishStatus | SaveAssignment | OpenCapture
          | CloseCapture | Replay | Log | Done)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CoreSettings:
    unit_id: str
    sample_rate: int = 16000
    channels: int = 4
    chunk_ms: int = 40
    dsp_mode: str = "on"
    dsp_array: str = "respeaker-4mic-pi"
    auto_open: bool = True
    privacy_auto_resume_s: float = 0.0
    # file-backed input (demo, tests): stop after this many frames; resume where sealed
    stop_after_frames: int = 0
    resume_input: bool = False
    exit_when_done: bool = False


# ---------------------------------------------------------------------------- the core


class UnitCore:
    def __init__(
        self,
        settings: CoreSettings,
        *,
        recovery: X25519PublicKey | None = None,
        assignment: dict | None = None,
        input_frames: int = 0,
        cues_seen: list[int] | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.s = settings
        self.recovery = recovery
        self.assignment = assignment
        self.rng = rng
        self.session: Session | None = None
        self.chunker: Chunker | None = None
        self.dsp = None
        self._dsp_in: list[np.ndarray] = []
        self._dsp_in_frames = 0
        self.input_frames = input_frames
        self.captured_done = bool(settings.stop_after_frames
                                  and input_frames >= settings.stop_after_frames)
        self.cues_seen = list(cues_seen or [])
        self.privacy_paused = False
        self._paused_at_frames = 0
        self._paused_since: float | None = None
        self._last_pause_mark = float("-inf")
        # the capture device: closed (no session), opening, open, or failed
        self.capture = "closed"
        self.capture_error: str | None = None
        self._capture_lost_at_us: int | None = None
        self._capture_retry_at = 0.0
        self._capture_attempts = 0
        self.capture_overruns = 0
        self.alarms: dict[str, int] = {}
        self.last_error: str | None = None
        self.last_gap: dict | None = None
        self._undeclared: list[tuple[str, str, int]] = []  # (session, stream, seq) refused
        self._held_session: list[Record] = []  # session records the spool refused
        self.health = Health()
        self.light: str | None = None
        self._last_status = float("-inf")
        self._done = False

    # ------------------------------------------------------------------ entry point

    def handle(self, event, now: Now) -> list[Effect]:
        out: list[Effect] = []
        handler = getattr(self, "_on_" + type(event).__name__)
        handler(event, now, out)
        self._light(out)
        return out

    # ------------------------------------------------------------------ lifecycle

    def _on_Start(self, e: Start, now: Now, out: list) -> None:
        if e.stale_session:
            # the last process died with this session open; its key died with it, so it
            # cannot continue: close it, so the scribe is not left waiting for more
            close = msgs.session_close(
                unit_id=self.s.unit_id, session_id=bytes.fromhex(e.stale_session),
                ended_us=now.wall_us, last_audio_seq=e.stale_last_audio_seq,
                last_event_seq=e.stale_last_event_seq, reason="unit_restart")
            out.append(Spool((Record(topics.SESSION, msgs.dumps(close), "session",
                                     e.stale_session),), {"open_session": ""}))
            out.append(Log("warning", "stale_session_closed", {"session": e.stale_session[:8]}))

    def _on_Stop(self, e: Stop, now: Now, out: list) -> None:
        if self.session is not None and not self.captured_done:
            self._close_session("agent_stopped", now, out)
        if self.capture != "closed":
            out.append(CloseCapture())
            self.capture = "closed"
        out.append(PublishStatus(self.status(now)))

    def _on_Tick(self, e: Tick, now: Now, out: list) -> None:
        self.health = e.health
        if self.privacy_paused and self.s.privacy_auto_resume_s and \
                self._paused_since is not None and \
                now.mono_s - self._paused_since > self.s.privacy_auto_resume_s:
            self._toggle_privacy(now, out)
        if self.session is None and not self.captured_done and self.s.auto_open \
                and self.assignment:
            self._open_session(now, out)
        if self.session is not None and self.capture == "failed" and \
                now.mono_s >= self._capture_retry_at:
            self.capture = "opening"
            out.append(OpenCapture(self._resume_skip()))
        if self.captured_done and self.s.exit_when_done and e.health.spool_empty \
                and not self._done:
            self._done = True
            out.append(Log("info", "done", {"input_frames": self.input_frames}))
            out.append(Done())
        if now.mono_s - self._last_status >= STATUS_INTERVAL_S:
            self._last_status = now.mono_s
            out.append(PublishStatus(self.status(now)))

    # ------------------------------------------------------------------ control

    def _on_AssignmentReceived(self, e: AssignmentReceived, now: Now, out: list) -> None:
        a = e.assignment
        changed = self.assignment is None or self.assignment.get("scribes") != a["scribes"]
        self.assignment = a
        out.append(SaveAssignment(a))
        out.append(Log("info", "assignment", {"scribes": len(a["scribes"])}))
        if changed and self.session is not None:
            # new recipients: the running session's key was not wrapped to them
            self._close_session("reassigned", now, out)

    def _on_SessionControlReceived(self, e: SessionControlReceived, now: Now, out: list) -> None:
        if e.action == "close" and self.session is not None:
            self._close_session("closed_by_relay", now, out)

    def _on_CueAckReceived(self, e: CueAckReceived, now: Now, out: list) -> None:
        out.append(Log("info", "cue_ack", {"cue_id": e.cue_id}))
        out.append(PuckCueSeen(e.cue_id))

    def _on_ReplayRequested(self, e: ReplayRequested, now: Now, out: list) -> None:
        out.append(Replay(e.since_us))

    # ------------------------------------------------------------------ the puck

    def _on_PuckCue(self, e: PuckCue, now: Now, out: list) -> None:
        if e.cue_id in self.cues_seen:
            return  # the same press again (the puck retransmits across an agent restart)
        if self.session is None:
            out.append(Log("warning", "cue_without_session", {"cue_id": e.cue_id}))
            return
        self.cues_seen = (self.cues_seen + [e.cue_id])[-CUE_MEMORY:]
        seq, sealed = self.session.seal_event("cue", now.wall_us, cue_id=e.cue_id)
        self._spool(out, [self._rec(topics.EVENT, sealed, "event", seq=seq)],
                    {"cues_seen": ",".join(map(str, self.cues_seen))})
        out.append(Log("info", "cue", {"cue_id": e.cue_id, "seq": seq}))

    def _on_PrivacyToggle(self, e: PrivacyToggle, now: Now, out: list) -> None:
        self._toggle_privacy(now, out)

    def _toggle_privacy(self, now: Now, out: list) -> None:
        s = self.session
        if s is None:
            return
        if not self.privacy_paused:
            # seal what was captured up to the hold, then stop at the source
            self._seal_held_audio(out)
            if self._capture_lost_at_us is not None:  # the device is gone too: loss so far
                self._declare_capture_loss(self._capture_lost_at_us, now, out)
                self._capture_lost_at_us = now.wall_us
            self.privacy_paused = True
            self._paused_at_frames = self.input_frames
            self._paused_since = now.mono_s
            seq, sealed = s.seal_event("privacy_pause", now.wall_us, audio_seq=s.next_audio_seq)
            out.append(Log("info", "privacy_pause"))
        else:
            assert self.chunker is not None
            # capture times stay true across the pause
            self.chunker.skip(self.input_frames - self._paused_at_frames)
            self.dsp = self._make_dsp()
            self.privacy_paused = False
            self._paused_since = None
            if self._capture_lost_at_us is not None:  # the pause is not a loss; from now on
                self._capture_lost_at_us = now.wall_us
            seq, sealed = s.seal_event("privacy_resume", now.wall_us, audio_seq=s.next_audio_seq)
            out.append(Log("info", "privacy_resume"))
        self._spool(out, [self._rec(topics.EVENT, sealed, "event", seq=seq)])

    # ------------------------------------------------------------------ capture

    def _resume_skip(self) -> int:
        return self.input_frames if self.s.resume_input else 0

    def _on_CaptureOpened(self, e: CaptureOpened, now: Now, out: list) -> None:
        was_lost = self._capture_lost_at_us
        self.capture = "open"
        self._capture_attempts = 0
        if was_lost is not None:
            self._capture_lost_at_us = None
            self.capture_error = None
            self.alarms.pop("capture_fault", None)
            self._declare_capture_loss(was_lost, now, out)
            out.append(Log("info", "capture_resumed", {"lost_ms": (now.wall_us - was_lost) // 1000}))

    def _on_CaptureFailed(self, e: CaptureFailed, now: Now, out: list) -> None:
        first = self._capture_lost_at_us is None
        if first:
            if self.session is not None and not self.privacy_paused and self.dsp is not None:
                self._seal_held_audio(out)  # everything captured before the failure
            self._capture_lost_at_us = now.wall_us
            self.capture_error = e.reason
            self.last_error = f"capture failed: {e.reason}"
            self.alarms.setdefault("capture_fault", now.wall_us)
            out.append(Log("error", "capture_failed", {"reason": e.reason}))
            out.append(PublishStatus(self.status(now)))  # tell the scribe now, not in a second
        self.capture = "failed"
        delay = CAPTURE_RETRY_S[min(self._capture_attempts, len(CAPTURE_RETRY_S) - 1)]
        self._capture_attempts += 1
        self._capture_retry_at = now.mono_s + delay
        if not first:
            out.append(Log("warning", "capture_reopen_failed", {
                "reason": e.reason, "attempt": self._capture_attempts - 1, "retry_in_s": delay}))
        out.append(CloseCapture())

    def _on_CaptureOverruns(self, e: CaptureOverruns, now: Now, out: list) -> None:
        if e.total > self.capture_overruns:
            self.alarms["capture_overrun"] = now.wall_us
            out.append(Log("warning", "capture_overrun", {"total": e.total}))
        self.capture_overruns = e.total

    def _declare_capture_loss(self, lost_at_us: int, now: Now, out: list) -> None:
        """The device was gone from `lost_at_us` until now: that stretch of the session is
        declared lost (a gap over the chunks it would have filled), and capture times stay
        true across it."""
        s = self.session
        if s is None or self.chunker is None:
            return
        lost_frames = max(0, (now.wall_us - lost_at_us) * self.s.sample_rate // 1_000_000)
        if self.privacy_paused:
            return  # nothing was being captured anyway; the resume skips the interval
        self.chunker.skip(lost_frames)
        self.dsp = self._make_dsp()
        chunks = -(-lost_frames // self.chunker.chunk_samples)  # ceil
        if chunks:
            first = s.next_audio_seq
            s.next_audio_seq += chunks
            self._declare_gap(s.hex, "audio", first, first + chunks - 1, "capture_lost", now, out)

    def _on_AudioCaptured(self, e: AudioCaptured, now: Now, out: list) -> None:
        if self.session is None or self.captured_done:
            return
        block = e.block
        stop_after = self.s.stop_after_frames
        if stop_after:
            block = block[: max(0, stop_after - self.input_frames)]
        self.input_frames += len(block)
        if self.privacy_paused:
            # dropped at the source: never reaches DSP, spool or network
            if now.mono_s - self._last_pause_mark > PAUSE_MARK_INTERVAL_S:
                # a restart of a file-backed input must not replay the paused interval
                self._last_pause_mark = now.mono_s
                out.append(Spool((), {"input_frames": str(self.input_frames)}))
        else:
            # the DSP runs on whole chunks: its per-call cost is paid once per chunk, at no
            # latency cost since audio leaves only in whole chunks anyway
            assert self.chunker is not None
            self._dsp_in.append(block)
            self._dsp_in_frames += len(block)
            if self._dsp_in_frames >= self.chunker.chunk_samples:
                self._run_dsp(out)
        if stop_after and self.input_frames >= stop_after:
            self._close_session("input_complete", now, out)
            self.captured_done = True

    # ------------------------------------------------------------------ session

    def _recipients(self) -> list[tuple[str, X25519PublicKey]]:
        if not self.assignment:
            return []
        return [(s.get("id", "scribe"), env.load_public_key(s["public_key"]))
                for s in self.assignment["scribes"]]

    def _make_dsp(self):
        return make_stage(self.s.dsp_mode, channels=self.s.channels,
                          sample_rate=self.s.sample_rate, array=self.s.dsp_array)

    def _open_session(self, now: Now, out: list) -> None:
        scribes = self._recipients()
        if not scribes:
            return
        s = self.session = Session(
            unit_id=self.s.unit_id, scribes=scribes, recovery=self.recovery,
            sample_rate=self.s.sample_rate, chunk_ms=self.s.chunk_ms, started_us=now.wall_us,
            room=(self.assignment or {}).get("room"),
            session_id=self.rng(env.SESSION_ID_LEN), session_key=self.rng(env.KEY_LEN))
        self.chunker = Chunker(sample_rate=self.s.sample_rate, chunk_ms=self.s.chunk_ms,
                               start_us=now.wall_us)
        self.dsp = self._make_dsp()
        self._dsp_in, self._dsp_in_frames = [], 0
        self.privacy_paused = False
        seq, start = s.seal_event("session_start", now.wall_us)
        self._spool(out, [self._rec(topics.SESSION, msgs.dumps(s.open_message()), "session"),
                          self._rec(topics.EVENT, start, "event", seq=seq)],
                    {"open_session": s.hex})
        out.append(Log("info", "session_open", {"session": s.hex[:8]}))
        if self._capture_lost_at_us is not None:
            self._capture_lost_at_us = now.wall_us  # this session misses from its start
        elif self.capture == "closed":
            self.capture = "opening"
            out.append(OpenCapture(self._resume_skip()))

    def _close_session(self, reason: str, now: Now, out: list) -> None:
        s = self.session
        if s is None:
            return
        if self._capture_lost_at_us is not None:
            # the device is still gone: what the session missed up to its end is declared
            self._declare_capture_loss(self._capture_lost_at_us, now, out)
            self._capture_lost_at_us = now.wall_us
        elif not self.privacy_paused:
            self._seal_held_audio(out)
        seq, end = s.seal_event("session_end", now.wall_us, reason=reason)
        self._spool(out, [self._rec(topics.EVENT, end, "event", seq=seq),
                          self._rec(topics.SESSION, msgs.dumps(s.close_message(now.wall_us,
                                                                                 reason)),
                                    "session")],
                    {"open_session": ""})
        s.forget_key()
        self.session = None
        self.privacy_paused = False
        self._paused_since = None
        out.append(Log("info", "session_close", {"session": s.hex[:8], "reason": reason}))
        if self.capture in ("open", "opening") and (self.captured_done or reason
                                                    == "input_complete"):
            out.append(CloseCapture())
            self.capture = "closed"

    def _rec(self, leaf: str, payload: bytes, kind: str, *, seq: int | None = None,
             audio_ms: int = 0) -> Record:
        return Record(leaf, payload, kind, self.session.hex if self.session else None, seq,
                      audio_ms)

    def _sealed_input_frames(self) -> int:
        """Input frames whose audio is now in the spool (what a restart may skip)."""
        held = self.chunker.pending if self.chunker is not None else 0
        held += self._dsp_in_frames
        held += self.dsp.latency_samples if self.dsp is not None else 0
        return max(0, self.input_frames - held)

    def _run_dsp(self, out: list) -> None:
        assert self.dsp is not None and self.chunker is not None
        if not self._dsp_in:
            return
        block = self._dsp_in[0] if len(self._dsp_in) == 1 else np.concatenate(self._dsp_in)
        self._dsp_in, self._dsp_in_frames = [], 0
        self._seal_chunks(self.chunker.push(self.dsp.process(block)), out)

    def _seal_held_audio(self, out: list) -> None:
        """Seal what the DSP and the chunker still hold (before a pause, a loss, the end)."""
        if self.dsp is None or self.chunker is None:
            return
        self._run_dsp(out)
        tail = self.dsp.flush()
        chunks = self.chunker.push(tail) if len(tail) else []
        last = self.chunker.flush()
        if last is not None:
            chunks.append(last)
        self._seal_chunks(chunks, out)

    def _seal_chunks(self, chunks: list[Chunk], out: list) -> None:
        assert self.session is not None
        records = []
        for c in chunks:
            seq, sealed = self.session.seal_audio(c.pcm, c.capture_us)
            ms = len(c.pcm) * 1000 // self.s.sample_rate
            records.append(self._rec(topics.AUDIO, sealed, "audio", seq=seq, audio_ms=ms))
        if records:
            last = records[-1]
            records[-1] = Record(last.leaf, last.payload, last.kind, last.session, last.seq,
                                 last.audio_ms, self._sealed_input_frames())
            self._spool(out, records)

    # ------------------------------------------------------------------ spool and gaps

    def _spool(self, out: list, records: list[Record], state: dict[str, str] | None = None
               ) -> None:
        """Everything sealed goes out through here. What the medium refused earlier is
        retried first, and its loss declared (a gap record, an alarm), never silent."""
        if self._held_session:
            held, self._held_session = self._held_session, []
            out.append(Spool(tuple(held)))
        if self._undeclared:
            self._declare_undeclared(out)
        out.append(Spool(tuple(records), state))

    def _on_SpoolRefused(self, e: SpoolRefused, now: Now, out: list) -> None:
        self.last_error = f"spool write failed ({e.error}); audio is being lost"
        self.alarms.setdefault("spool_disk_full", now.wall_us)
        out.append(Log("error", "spool_write_failed", {"error": e.error,
                                                       "records": len(e.records)}))
        for r in e.records:
            if r.kind in ("audio", "event") and r.session and r.seq is not None:
                self._undeclared.append((r.session, r.kind, r.seq))
            elif r.kind == "session":
                self._held_session.append(r)

    def _on_SpoolEvicted(self, e: SpoolEvicted, now: Now, out: list) -> None:
        for ev in e.evictions:
            self._declare_gap(ev.session, ev.kind, ev.first_seq, ev.last_seq, ev.reason, now,
                              out)

    def _on_SpoolWritten(self, e: SpoolWritten, now: Now, out: list) -> None:
        self.alarms.pop("spool_disk_full", None)

    def _declare_undeclared(self, out: list) -> None:
        items, self._undeclared = self._undeclared, []
        ranges: dict[tuple[str, str], list[int]] = {}
        for session, stream, seq in items:
            ranges.setdefault((session, stream), []).append(seq)
        for (session, stream), seqs in ranges.items():
            for first, last in seq_ranges(seqs):
                self._emit_gap(session, stream, first, last, "spool_full", None, out)

    def _declare_gap(self, session: str, stream: str, first: int, last: int, reason: str,
                     now: Now, out: list) -> None:
        self._emit_gap(session, stream, first, last, reason, now, out)

    def _emit_gap(self, session: str, stream: str, first: int, last: int, reason: str,
                  now: Now | None, out: list) -> None:
        at = now.wall_us if now is not None else 0
        gap = msgs.gap(unit_id=self.s.unit_id, session_hex=session, stream=stream,
                       first_seq=first, last_seq=last, reason=reason, at_us=at)
        self.last_gap = {k: gap[k] for k in ("session", "stream", "first_seq", "last_seq",
                                             "reason", "at_us")}
        if reason != "capture_lost":
            self.alarms.setdefault("spool_evicted", at)
        out.append(Log("warning", "gap_declared", {"session": session[:8], "stream": stream,
                                                   "first": first, "last": last,
                                                   "reason": reason}))
        out.append(Spool((Record(topics.SESSION, msgs.dumps(gap), "session", session),),
                         send_direct_if_refused=True))

    # ------------------------------------------------------------------ status and light

    def led_state(self) -> str:
        """What the physician's light must say: the unit's real state, nothing nicer."""
        if "spool_disk_full" in self.alarms or self._capture_lost_at_us is not None:
            return "fault"
        if self.session is None:
            return "idle"
        if self.privacy_paused:
            return "paused"
        return "live" if self.health.link_up else "offline_recording"

    def _light(self, out: list) -> None:
        state = self.led_state()
        if state != self.light:
            self.light = state
            out.append(ShowLight(state))

    def capture_state(self) -> str:
        if self._capture_lost_at_us is not None:
            return "fault"
        if self.session is None:
            return "idle"
        return "paused" if self.privacy_paused else "live"

    def status(self, now: Now) -> dict:
        h = self.health
        return msgs.status(
            unit_id=self.s.unit_id,
            online=True,
            at_us=now.wall_us,
            link="up" if h.link_up else "down",
            catching_up=h.catching_up,
            session=self.session.hex if self.session else None,
            capture=self.capture_state(),
            capture_error=self.capture_error,
            capture_overruns=self.capture_overruns,
            spool=h.spool,
            inflight=h.inflight,
            dsp=self.dsp.stats() if self.dsp is not None else None,
            last_error=self.last_error or h.uplink_error,
            last_gap=self.last_gap,
            alarms=sorted(self.alarms),
            puck=None if h.puck_connected is None else {"connected": h.puck_connected,
                                                        "led": self.light},
        )
