"""The unit agent: wires capture -> DSP -> chunker -> session sealer -> spool -> uplink.

The capture loop runs in the calling thread; the uplink and the puck have their own.
Control messages (assignment, session control, cue acks) arrive on the uplink's thread
and are handed to the capture loop through a queue, so session state has one owner.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge_agent import sdnotify as sd
from edge_agent.capture import AlsaCapture
from edge_agent.chunker import Chunker
from edge_agent.config import AgentConfig
from edge_agent.dsp import make_stage
from edge_agent.session import Session
from edge_agent.spool import Spool, seq_ranges
from edge_agent.uplink import Uplink
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import topics

log = logging.getLogger("edge_agent")

STATUS_INTERVAL_S = 1.0


def now_us() -> int:
    return time.time_ns() // 1000


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(
            Path(cfg.spool.dir),
            max_bytes=cfg.spool.max_bytes,
            max_age_s=cfg.spool.max_age_s,
            fsync_interval_s=cfg.spool.fsync_interval_s,
            ack_grace_s=cfg.spool.ack_grace_s,
            segment_bytes=cfg.spool.segment_bytes,
        )
        self.uplink = Uplink(cfg.broker, cfg.unit_id, self.spool, on_control=self._on_control)
        self.recovery = self._load_recovery_key()
        self.assignment: dict | None = self._load_assignment()
        self.session: Session | None = None
        self.capture: AlsaCapture | None = None
        self.dsp = None
        self.chunker: Chunker | None = None
        self.privacy_paused = False
        self.last_error: str | None = None
        self._control: queue.Queue[dict] = queue.Queue()
        self._stop = threading.Event()
        self._input_frames = int(self.spool.get_state("input_frames", "0") or 0)
        self._captured_done = False
        self._last_status = 0.0
        self.puck = None
        self._resume_tail = None
        self._dsp_in: list[np.ndarray] = []
        self._dsp_in_frames = 0
        self._shown: str | None = None
        self._capture_failed = False
        self._paused_at_frames = 0
        self._paused_since: float | None = None
        self._last_pause_mark = 0.0
        self._cues_seen: list[int] = [
            int(c) for c in (self.spool.get_state("cues_seen", "") or "").split(",") if c]
        self.alarms: dict[str, int] = {}
        self.last_gap: dict | None = None
        self._undeclared: list[tuple[str, str, int]] = []
        self._held_session: list[dict] = []

    # ------------------------------------------------------------------ keys and assignment

    def _load_recovery_key(self) -> X25519PublicKey | None:
        path = self.cfg.keys.recovery_public_key_file
        if not path:
            return None
        text = Path(path).read_text().strip()
        return env.load_public_key(text)

    def _assignment_path(self) -> Path:
        return self.state_dir / "assignment.json"

    def _load_assignment(self) -> dict | None:
        # the last assignment is kept (public keys only) so the unit can record offline
        try:
            return msgs.check_control(json.loads(self._assignment_path().read_text()))
        except (FileNotFoundError, ValueError, msgs.MessageError):
            return None

    def _save_assignment(self, a: dict) -> None:
        tmp = self._assignment_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(a))
        tmp.replace(self._assignment_path())

    # ------------------------------------------------------------------ control

    def _on_control(self, ctl: dict) -> None:
        self._control.put(ctl)

    def _cue(self, cue_id: int) -> None:
        if cue_id in self._cues_seen:
            return  # the same press again (puck retransmission across an agent restart)
        if self.session is None:
            log.warning("event=cue_without_session cue_id=%d", cue_id)
            return
        self._cues_seen = (self._cues_seen + [cue_id])[-64:]
        at = now_us()
        seq, sealed = self.session.seal_event("cue", at, cue_id=cue_id)
        self._spool([self._rec(topics.EVENT, sealed, "event", seq=seq)],
                    {"cues_seen": ",".join(map(str, self._cues_seen))})
        log.info("event=cue cue_id=%d seq=%d", cue_id, seq)

    def _toggle_privacy(self) -> None:
        if self.session is None:
            return
        assert self.dsp is not None and self.chunker is not None
        s = self.session
        if not self.privacy_paused:
            # seal what was captured up to the hold, then stop at the source
            self._seal_held_audio()
            self.privacy_paused = True
            self._paused_at_frames = self._input_frames
            self._paused_since = time.monotonic()
            seq, sealed = s.seal_event("privacy_pause", now_us(), audio_seq=s.next_audio_seq)
            log.info("event=privacy_pause")
        else:
            skipped = self._input_frames - self._paused_at_frames
            self.chunker.skip(skipped)  # capture times stay true across the pause
            self.dsp = make_stage(self.cfg.dsp.mode, channels=self.cfg.capture.channels,
                                  sample_rate=self.cfg.capture.sample_rate,
                                  array=self.cfg.dsp.array)
            self.privacy_paused = False
            self._paused_since = None
            seq, sealed = s.seal_event("privacy_resume", now_us(), audio_seq=s.next_audio_seq)
            log.info("event=privacy_resume")
        self._spool([self._rec(topics.EVENT, sealed, "event", seq=seq)])

    def _handle_control(self, ctl: dict) -> None:
        t = ctl["type"]
        if t == "assignment":
            changed = self.assignment is None or self.assignment.get("scribes") != ctl["scribes"]
            self.assignment = ctl
            self._save_assignment(ctl)
            log.info("event=assignment scribes=%d", len(ctl["scribes"]))
            if changed and self.session is not None:
                # new recipients: the running session's key was not wrapped to them
                self._close_session("reassigned")
        elif t == "session_control":
            if ctl.get("action") == "close" and self.session is not None:
                self._close_session("closed_by_relay")
        elif t == "cue_ack":
            log.info("event=cue_ack cue_id=%s", ctl.get("cue_id"))
            if self.puck is not None:
                self.puck.cue_seen(int(ctl["cue_id"]))
        elif t == "replay":
            n = self.uplink.replay_since(ctl["since_us"] / 1e6)
            log.info("event=replay_requested records=%d", n)
        elif t == "_puck_cue":
            self._cue(int(ctl["cue_id"]))
        elif t == "_puck_privacy":
            self._toggle_privacy()

    # ------------------------------------------------------------------ session

    def _scribes(self) -> list[tuple[str, X25519PublicKey]]:
        if not self.assignment:
            return []
        return [(s.get("id", "scribe"), env.load_public_key(s["public_key"]))
                for s in self.assignment["scribes"]]

    def _open_session(self) -> None:
        scribes = self._scribes()
        if not scribes:
            return
        started = now_us()
        self.session = Session(
            unit_id=self.cfg.unit_id,
            scribes=scribes,
            recovery=self.recovery,
            sample_rate=self.cfg.capture.sample_rate,
            chunk_ms=self.cfg.session.chunk_ms,
            started_us=started,
            room=(self.assignment or {}).get("room"),
        )
        self.chunker = Chunker(
            sample_rate=self.cfg.capture.sample_rate,
            chunk_ms=self.cfg.session.chunk_ms,
            start_us=started,
        )
        self.dsp = make_stage(
            self.cfg.dsp.mode,
            channels=self.cfg.capture.channels,
            sample_rate=self.cfg.capture.sample_rate,
            array=self.cfg.dsp.array,
        )
        s = self.session
        seq, start_env = s.seal_event("session_start", started)
        self._spool(
            [
                self._rec(topics.SESSION, msgs.dumps(s.open_message()), "session"),
                self._rec(topics.EVENT, start_env, "event", seq=seq),
            ],
            {"open_session": s.hex},
        )
        log.info("event=session_open session=%s", s.hex[:8])

    def _rec(self, leaf: str, payload: bytes, kind: str, *, seq: int | None = None,
             audio_ms: int = 0) -> dict:
        return {
            "topic": topics.unit_topic(self.cfg.unit_id, leaf),
            "payload": payload,
            "kind": kind,
            "session": self.session.hex if self.session else None,
            "seq": seq,
            "audio_ms": audio_ms,
        }

    def _seal_chunks(self, chunks, *, final: bool = False) -> None:
        assert self.session is not None
        records = []
        for i, c in enumerate(chunks):
            last = final and i == len(chunks) - 1
            seq, sealed = self.session.seal_audio(c.pcm, c.capture_us, final=last)
            ms = len(c.pcm) * 1000 // self.cfg.capture.sample_rate
            records.append(self._rec(topics.AUDIO, sealed, "audio", seq=seq, audio_ms=ms))
        if records:
            records[-1]["input_end"] = self._sealed_input_frames()
        if records or final:
            self._spool(records)

    def _spool(self, records: list[dict], state: dict[str, str] | None = None) -> None:
        """Everything sealed goes through here. If the medium refuses it, the loss is
        declared (a gap record, an alarm), never silent."""
        if self._undeclared:
            self._try_declare_unspooled()
        try:
            self.spool.put_many(records, state)
            self.alarms.pop("spool_disk_full", None)
        except OSError as e:
            self.last_error = f"spool write failed ({e.strerror or e}); audio is being lost"
            self._alarm("spool_disk_full")
            log.error("event=spool_write_failed errno=%s records=%d", e.errno, len(records))
            for r in records:
                if r["kind"] in ("audio", "event") and r.get("session"):
                    self._undeclared.append((r["session"], r["kind"], r["seq"]))
                elif r["kind"] == "session":
                    self._held_session.append(r)
        for ev in self.spool.take_evictions():
            self._declare_gap(ev.session, ev.kind, ev.first_seq, ev.last_seq, ev.reason)
        self.uplink.wake()

    def _declare_gap(self, session: str, kind: str, first: int, last: int, reason: str) -> None:
        gap = msgs.gap(unit_id=self.cfg.unit_id, session_hex=session, stream=kind,
                       first_seq=first, last_seq=last, reason=reason, at_us=now_us())
        self.last_gap = {k: gap[k] for k in ("session", "stream", "first_seq", "last_seq",
                                             "reason", "at_us")}
        self._alarm("spool_evicted")
        log.warning("event=gap_declared session=%s stream=%s first=%d last=%d reason=%s",
                    session[:8], kind, first, last, reason)
        try:
            self.spool.put_many([{"topic": topics.unit_topic(self.cfg.unit_id, topics.SESSION),
                                  "payload": msgs.dumps(gap), "kind": "session",
                                  "session": session}])
        except OSError:
            # not even the gap fits: send it straight from memory when the link allows
            self.uplink.send_direct(topics.unit_topic(self.cfg.unit_id, topics.SESSION),
                                    msgs.dumps(gap))

    def _try_declare_unspooled(self) -> None:
        items, self._undeclared = self._undeclared, []
        held, self._held_session = self._held_session, []
        if held:
            try:
                self.spool.put_many(held)
            except OSError:
                self._held_session = held
        ranges: dict[tuple[str, str], list[int]] = {}
        for session, kind, seq in items:
            ranges.setdefault((session, kind), []).append(seq)
        for (session, kind), seqs in ranges.items():
            for first, last in seq_ranges(seqs):
                self._declare_gap(session, kind, first, last, "spool_full")

    def _alarm(self, name: str) -> None:
        self.alarms.setdefault(name, now_us())

    def _sealed_input_frames(self) -> int:
        """Input frames whose audio is now in the spool (what a restart may skip)."""
        held = self.chunker.pending if self.chunker is not None else 0
        held += self._dsp_in_frames
        held += self.dsp.latency_samples if self.dsp is not None else 0
        return max(0, self._input_frames - held)

    def _run_dsp(self) -> None:
        assert self.dsp is not None and self.chunker is not None
        if not self._dsp_in:
            return
        block = self._dsp_in[0] if len(self._dsp_in) == 1 else np.concatenate(self._dsp_in)
        self._dsp_in, self._dsp_in_frames = [], 0
        self._seal_chunks(self.chunker.push(self.dsp.process(block)))

    def _seal_held_audio(self) -> None:
        """Seal what the DSP and the chunker still hold (before a pause or the end)."""
        assert self.dsp is not None and self.chunker is not None
        self._run_dsp()
        tail = self.dsp.flush()
        chunks = self.chunker.push(tail) if len(tail) else []
        last = self.chunker.flush()
        if last is not None:
            chunks.append(last)
        self._seal_chunks(chunks)

    def _close_session(self, reason: str) -> None:
        s = self.session
        if s is None:
            return
        assert self.dsp is not None and self.chunker is not None
        self._seal_held_audio()
        seq, end_env = s.seal_event("session_end", now_us(), reason=reason)
        self._spool(
            [
                self._rec(topics.EVENT, end_env, "event", seq=seq),
                self._rec(topics.SESSION, msgs.dumps(s.close_message(now_us(), reason)),
                          "session"),
            ],
            {"open_session": ""},
        )
        s.forget_key()
        self.session = None
        log.info("event=session_close session=%s reason=%s", s.hex[:8], reason)

    def _close_stale_session(self) -> None:
        """A session left open by a crash cannot be continued (its key died with the
        process): declare it closed so the scribe is not left waiting."""
        stale = self.spool.get_state("open_session")
        if not stale:
            return
        msg = msgs.session_close(
            unit_id=self.cfg.unit_id, session_id=bytes.fromhex(stale), ended_us=now_us(),
            last_audio_seq=self.spool.last_seq.get((stale, "audio"), -1),
            last_event_seq=self.spool.last_seq.get((stale, "event"), -1),
            reason="unit_restart")
        self._spool(
            [{"topic": topics.unit_topic(self.cfg.unit_id, topics.SESSION),
              "payload": msgs.dumps(msg), "kind": "session", "session": stale}],
            {"open_session": ""},
        )
        log.warning("event=stale_session_closed session=%s", stale[:8])

    # ------------------------------------------------------------------ status

    def status(self) -> dict:
        return msgs.status(
            unit_id=self.cfg.unit_id,
            online=True,
            at_us=now_us(),
            link="up" if self.uplink.connected else "down",
            catching_up=self.uplink.backlog,
            session=self.session.hex if self.session else None,
            capture=("paused" if self.privacy_paused else "live") if self.session else "idle",
            spool=self.spool.stats(),
            inflight=self.uplink.inflight,
            dsp=self.dsp.stats() if self.dsp is not None else None,
            last_error=self.last_error or self.uplink.last_error,
            last_gap=self.last_gap,
            alarms=sorted(self.alarms),
            puck=None if self.puck is None else {"connected": self.puck.connected,
                                                 "led": self._shown},
        )

    def _maybe_status(self) -> None:
        t = time.monotonic()
        if t - self._last_status >= STATUS_INTERVAL_S:
            self._last_status = t
            self.uplink.set_status(self.status())
            sd.watchdog()

    # ------------------------------------------------------------------ main loop

    def stop(self) -> None:
        self._stop.set()

    def _open_capture(self) -> AlsaCapture:
        c = self.cfg.capture
        cap = AlsaCapture(
            c.device,
            sample_rate=c.sample_rate,
            channels=c.channels,
            period_frames=c.period_frames,
            pace_realtime=c.pace_realtime,
            speed=c.speed,
        )
        cap.open()
        if c.resume_input and self._input_frames:
            # file-backed input after a restart: skip what is already sealed in the spool
            skip = self._input_frames
            while skip > 0:
                block = cap.read_unpaced()
                if len(block) > skip:
                    self._resume_tail = block[skip:]
                skip -= len(block)
            self._input_frames_at_open = self._input_frames
            log.info("event=input_resumed frames=%d", self._input_frames)
        return cap

    def _start_puck(self) -> None:
        if not self.cfg.puck.port:
            return
        from edge_agent.puck import Puck

        self.puck = Puck(
            self.cfg.puck.port,
            on_cue=lambda cue_id: self._control.put({"type": "_puck_cue", "cue_id": cue_id}),
            on_privacy_toggle=lambda: self._control.put({"type": "_puck_privacy"}),
            on_connection=lambda up: log.info("event=puck_%s", "connected" if up else "lost"),
            # a 5 s hold is physical presence: the provisioning service may unlock
            on_presence_hold=self._presence_hold,
        )
        self.puck.start()

    def _presence_hold(self) -> None:
        from edge_agent.provision import record_presence_hold

        record_presence_hold(self.cfg.state_dir)
        log.info("event=presence_hold")

    def led_state(self) -> str:
        """What the physician's light must say: the unit's real state, nothing nicer."""
        if "spool_disk_full" in self.alarms or self._capture_failed:
            return "fault"
        if self.session is None:
            return "idle"
        if self.privacy_paused:
            return "paused"
        return "live" if self.uplink.connected else "offline_recording"

    def _update_puck(self) -> None:
        if self.puck is None:
            return
        state = self.led_state()
        if state != self._shown:
            self.puck.show(state)
            self._shown = state

    def run(self) -> int:
        self._close_stale_session()
        self._start_puck()
        self.uplink.start()
        sd.ready()
        stop_after = self.cfg.capture.stop_after_frames
        if stop_after and self._input_frames >= stop_after:
            self._captured_done = True
        try:
            while not self._stop.is_set():
                while not self._control.empty():
                    self._handle_control(self._control.get_nowait())
                self._maybe_status()
                self._update_puck()
                if self.privacy_paused and self.cfg.session.privacy_auto_resume_s and \
                        self._paused_since is not None and time.monotonic() - \
                        self._paused_since > self.cfg.session.privacy_auto_resume_s:
                    self._toggle_privacy()
                if self._captured_done:
                    if self.cfg.exit_when_done and len(self.spool) == 0:
                        log.info("event=done input_frames=%d", self._input_frames)
                        break
                    time.sleep(0.05)
                    continue
                if self.session is None:
                    if self.cfg.session.auto_open and self.assignment:
                        self._open_session()
                    if self.session is None:
                        time.sleep(0.05)
                        continue
                if self.capture is None:
                    self.capture = self._open_capture()
                self._capture_step(stop_after)
        finally:
            sd.stopping()
            if self.session is not None and not self._captured_done:
                self._close_session("agent_stopped")
            if self.capture is not None:
                self.capture.close()
            self.uplink.set_status(self.status())
            self.uplink.stop()
            if self.puck is not None:
                self.puck.show("idle")
                self.puck.stop()
            self.spool.close()
        return 0

    def _capture_step(self, stop_after: int) -> None:
        assert self.capture is not None and self.dsp is not None and self.chunker is not None
        if self._resume_tail is not None:
            block, self._resume_tail = self._resume_tail, None
        else:
            block = self.capture.read()
        if stop_after:
            block = block[: max(0, stop_after - self._input_frames)]
        self._input_frames += len(block)
        if self.privacy_paused:
            block = None  # dropped at the source: never reaches DSP, spool or network
            if time.monotonic() - self._last_pause_mark > 0.5:
                # a restart of a file-backed input must not replay the paused interval
                self._last_pause_mark = time.monotonic()
                self._spool([], {"input_frames": str(self._input_frames)})
        else:
            # the DSP runs on whole chunks: per-call overhead is paid once per chunk, and
            # it costs no latency since audio leaves only in whole chunks anyway
            self._dsp_in.append(block)
            self._dsp_in_frames += len(block)
            if self._dsp_in_frames >= self.chunker.chunk_samples:
                self._run_dsp()
        if stop_after and self._input_frames >= stop_after:
            self._close_session("input_complete")
            self._captured_done = True
            self.capture.close()
