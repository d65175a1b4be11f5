"""The unit agent: a thin runner around `edge_agent.core.UnitCore`.

It owns the adapters -- ALSA capture, the spool, the MQTT uplink, the puck -- feeds the
core what they report (typed inputs) and applies what the core decides (typed effects).
Every clinic rule lives in the core; nothing here decides anything about a session.
Each adapter is built in a `_make_*` method, so a test can swap one for a fake.

Concurrency: the capture loop (the thread that calls `run`) is the only one that calls
the core. The uplink's threads (paho, pump) and the puck's thread never touch it: they
put core inputs on `self.inbox`, which the loop drains between capture reads.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import deque
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge_agent import core as c
from edge_agent import sdnotify as sd
from edge_agent.capture import AlsaCapture, CaptureError
from edge_agent.config import AgentConfig
from edge_agent.spool import Spool
from edge_agent.uplink import Uplink
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import topics

log = logging.getLogger("edge_agent")

TICK_S = 0.1  # how often the core hears the clock and the adapters' health
IDLE_WAIT_S = 0.05  # with no capture open, how long the loop waits for an input


def now() -> c.Now:
    return c.Now(time.time_ns() // 1000, time.monotonic())


def log_event(level: str, event: str, fields: dict) -> None:
    """One key=value line; values with spaces or quotes are quoted so lines parse."""
    parts = [f"event={event}"]
    for k, v in fields.items():
        text = str(v)
        if not text or any(ch in text for ch in ' "=\\'):
            text = json.dumps(text)
        parts.append(f"{k}={text}")
    log.log(logging.getLevelName(level.upper()), " ".join(parts))


class Agent:
    def __init__(self, cfg: AgentConfig) -> None:
        self.cfg = cfg
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.inbox: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.spool = self._make_spool()
        self.uplink = self._make_uplink()
        self.puck = self._make_puck()
        self.capture: AlsaCapture | None = None
        self._overruns_seen = 0
        self._spool_failing = False
        self._done = False
        self.core = c.UnitCore(
            c.CoreSettings(
                unit_id=cfg.unit_id,
                sample_rate=cfg.capture.sample_rate,
                channels=cfg.capture.channels,
                chunk_ms=cfg.session.chunk_ms,
                dsp_mode=cfg.dsp.mode,
                dsp_array=cfg.dsp.array,
                auto_open=cfg.session.auto_open,
                privacy_auto_resume_s=cfg.session.privacy_auto_resume_s,
                stop_after_frames=cfg.file_input.stop_after_frames,
                resume_input=cfg.file_input.resume_input,
                exit_when_done=cfg.file_input.exit_when_done,
            ),
            recovery=self._load_recovery_key(),
            assignment=self._load_assignment(),
            input_frames=int(self.spool.get_state("input_frames", "0") or 0),
            cues_seen=[int(x) for x in (self.spool.get_state("cues_seen", "") or "").split(",")
                       if x],
        )

    # ------------------------------------------------------------------ adapters

    def _make_spool(self) -> Spool:
        s = self.cfg.spool
        return Spool(Path(s.dir), max_bytes=s.max_bytes, max_age_s=s.max_age_s,
                     fsync_interval_s=s.fsync_interval_s, ack_grace_s=s.ack_grace_s,
                     segment_bytes=s.segment_bytes)

    def _make_uplink(self) -> Uplink:
        return Uplink(self.cfg.broker, self.cfg.unit_id, self.spool, on_control=self._on_control)

    def _make_capture(self) -> AlsaCapture:
        cap, f = self.cfg.capture, self.cfg.file_input
        return AlsaCapture(cap.device, sample_rate=cap.sample_rate, channels=cap.channels,
                           period_frames=cap.period_frames, pace_realtime=f.pace_realtime,
                           speed=f.speed)

    def _make_puck(self):
        if not self.cfg.puck.port:
            return None
        from edge_agent.puck import Puck

        return Puck(
            self.cfg.puck.port,
            on_cue=lambda cue_id: self.inbox.put(c.PuckCue(cue_id)),
            on_privacy_toggle=lambda: self.inbox.put(c.PrivacyToggle()),
            on_connection=lambda up: log_event("info", "puck_connected" if up else "puck_lost",
                                               {}),
            # a 5 s hold is physical presence: the provisioning service may unlock
            on_presence_hold=self._presence_hold,
        )

    def _presence_hold(self) -> None:
        from edge_agent.provision import record_presence_hold

        record_presence_hold(self.cfg.state_dir)
        log_event("info", "presence_hold", {})

    # ------------------------------------------------------------------ persisted inputs

    def _load_recovery_key(self) -> X25519PublicKey | None:
        path = self.cfg.keys.recovery_public_key_file
        if not path:
            return None
        return env.load_public_key(Path(path).read_text().strip())

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

    # ------------------------------------------------------------------ inputs from threads

    def _on_control(self, ctl: dict) -> None:
        """On the uplink's thread: a checked control message becomes a core input."""
        t = ctl["type"]
        if t == "assignment":
            self.inbox.put(c.AssignmentReceived(ctl))
        elif t == "session_control":
            self.inbox.put(c.SessionControlReceived(str(ctl.get("action"))))
        elif t == "cue_ack":
            self.inbox.put(c.CueAckReceived(int(ctl["cue_id"])))
        elif t == "replay":
            self.inbox.put(c.ReplayRequested(int(ctl["since_us"])))

    def stop(self) -> None:
        self._stop.set()
        self.inbox.put(None)  # wake the loop

    # ------------------------------------------------------------------ effects

    def _feed(self, event) -> None:
        """Hand one input to the core and apply what it decides, and what that leads to."""
        work = deque([event])
        while work:
            for effect in self.core.handle(work.popleft(), now()):
                work.extend(self._apply(effect))

    def _apply(self, e) -> list:
        """Carry out one effect; returns the inputs it produced (failures, evictions)."""
        if isinstance(e, c.Spool):
            return self._apply_spool(e)
        if isinstance(e, c.ShowLight):
            if self.puck is not None:
                self.puck.show(e.state)
        elif isinstance(e, c.PuckCueSeen):
            if self.puck is not None:
                self.puck.cue_seen(e.cue_id)
        elif isinstance(e, c.PublishStatus):
            self.uplink.set_status(e.status)
            sd.watchdog()
        elif isinstance(e, c.SaveAssignment):
            self._save_assignment(e.assignment)
        elif isinstance(e, c.OpenCapture):
            return self._open_capture(e.skip_input_frames)
        elif isinstance(e, c.CloseCapture):
            if self.capture is not None:
                self.capture.close()
                self.capture = None
        elif isinstance(e, c.Replay):
            n = self.uplink.replay_since(e.since_us / 1e6)
            log_event("info", "replay_requested", {"records": n})
        elif isinstance(e, c.Log):
            log_event(e.level, e.event, e.fields)
        elif isinstance(e, c.Done):
            self._done = True
        return []

    def _apply_spool(self, e: c.Spool) -> list:
        records = [{"topic": topics.unit_topic(self.cfg.unit_id, r.leaf), "payload": r.payload,
                    "kind": r.kind, "session": r.session, "seq": r.seq, "audio_ms": r.audio_ms,
                    "input_end": r.input_end} for r in e.records]
        try:
            self.spool.put_many(records, e.state)
        except OSError as err:
            log.error("event=spool_write_failed errno=%s records=%d", err.errno, len(records))
            self._spool_failing = True
            if e.send_direct_if_refused:
                # not even a declared gap fits: send it straight from memory when the
                # link allows, so the scribe still learns of the loss
                for r in records:
                    self.uplink.send_direct(r["topic"], r["payload"])
                return []
            return [c.SpoolRefused(e.records, err.strerror or str(err))]
        follow: list = []
        if self._spool_failing:
            self._spool_failing = False
            follow.append(c.SpoolWritten())
        evicted = self.spool.take_evictions()
        if evicted:
            follow.append(c.SpoolEvicted(tuple(evicted)))
        self.uplink.wake()
        return follow

    def _open_capture(self, skip_frames: int) -> list:
        cap = self._make_capture()
        try:
            cap.open(skip_frames)
        except CaptureError as err:
            cap.close()
            return [c.CaptureFailed(str(err))]
        if skip_frames:
            log_event("info", "input_resumed", {"frames": skip_frames})
        self.capture = cap
        self._overruns_seen = 0
        return [c.CaptureOpened()]

    # ------------------------------------------------------------------ the loop

    def _health(self) -> c.Health:
        return c.Health(
            link_up=self.uplink.connected,
            catching_up=self.uplink.backlog,
            inflight=self.uplink.inflight,
            spool=self.spool.stats(),
            uplink_error=self.uplink.last_error,
            puck_connected=None if self.puck is None else self.puck.connected,
            spool_empty=len(self.spool) == 0,
        )

    def run(self) -> int:
        stale = self.spool.get_state("open_session") or None
        self._feed(c.Start(
            stale_session=stale,
            stale_last_audio_seq=self.spool.last_seq.get((stale, "audio"), -1) if stale else -1,
            stale_last_event_seq=self.spool.last_seq.get((stale, "event"), -1) if stale else -1))
        if self.puck is not None:
            self.puck.start()
        self.uplink.start()
        sd.ready()
        last_tick = 0.0
        try:
            while not self._stop.is_set() and not self._done:
                self._drain_inbox(wait_s=0.0 if self.capture is not None else IDLE_WAIT_S)
                if time.monotonic() - last_tick >= TICK_S:
                    last_tick = time.monotonic()
                    self._feed(c.Tick(self._health()))
                if self.capture is not None:
                    self._capture_step()
        finally:
            sd.stopping()
            self._feed(c.Stop())
            if self.capture is not None:
                self.capture.close()
            self.uplink.stop()
            if self.puck is not None:
                self.puck.show("idle")
                self.puck.stop()
            self.spool.close()
        return 0

    def _drain_inbox(self, wait_s: float) -> None:
        try:
            item = self.inbox.get(timeout=wait_s) if wait_s else self.inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            if item is not None:
                self._feed(item)
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                return

    def _capture_step(self) -> None:
        assert self.capture is not None
        try:
            block = self.capture.read()
        except CaptureError as err:
            self._feed(c.CaptureFailed(str(err)))
            return
        if self.capture is not None and self.capture.overruns != self._overruns_seen:
            self._overruns_seen = self.capture.overruns
            self._feed(c.CaptureOverruns(self.capture.overruns))
        if len(block):
            self._feed(c.AudioCaptured(block))
