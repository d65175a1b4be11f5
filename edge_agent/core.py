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
from dataclasses import dataclass, field, replace

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge_agent import update_gate
from edge_agent.chunker import Chunk, Chunker
from edge_agent.dsp import make_stage
from edge_agent.session import Session, Signer, close_message, gap_message
from edge_agent.spool import seq_ranges
from scribelink import codec as codecs
from scribelink import messages as msgs
from scribelink import topics, trust

STATUS_INTERVAL_S = 1.0  # how often the status is looked at
# ... and sent when what it says changed, or at least this often (the relay calls a unit
# whose status is 10 s old offline): an unchanged status every second was 4.5 kb/s of
# every room's upload, more than a quarter of its Opus audio
STATUS_HEARTBEAT_S = 4.0
CUE_MEMORY = 64  # cue ids remembered across restarts (the puck retransmits a press)
CAPTURE_RETRY_S = (0.5, 1.0, 2.0, 4.0, 5.0)  # backoff while the capture device is gone
PAUSE_MARK_INTERVAL_S = 0.5

LIGHTS = ("idle", "live", "paused", "offline_recording", "fault")


def status_gist(status: msgs.Status) -> dict:
    """What a status says, without what moves every second while all is well: its time,
    the chunks in flight, and the spool's exact size. The spool counts as changed when it
    starts or stops holding records, by a whole second of audio or of age, or by a MiB."""
    d = status.to_dict()
    d.pop("at_us", None)
    d.pop("inflight", None)
    spool = d.get("spool") or {}
    d["spool"] = {"holding": bool(spool.get("records")),
                  "seconds": round(float(spool.get("seconds") or 0)),
                  "age_s": round(float(spool.get("oldest_unsent_age_s") or 0)),
                  "mib": int(spool.get("bytes") or 0) >> 20}
    return d


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
    minute_of_day: int = 0  # local time, for the clinic's maintenance window
    update: dict | None = None  # the updater's report for the status (version, phase, result)
    certificate_alarm: str | None = None  # renewal overdue or refused (edge_agent/renew.py)


@dataclass(frozen=True)
class Start:
    """The agent started. `stale_session`: a session the last process left open."""

    stale_session: str | None = None
    stale_last_audio_seq: int = -1
    stale_last_event_seq: int = -1
    trial: bool = False  # this release was just switched to: hold sessions until healthy


@dataclass(frozen=True)
class Tick:
    health: Health


@dataclass(frozen=True)
class AssignmentReceived:
    """What the relay says the room's assignment is; the core checks every signature."""

    message: msgs.Assignment


@dataclass(frozen=True)
class ConfigReceived:
    message: msgs.Config


@dataclass(frozen=True)
class SessionControlReceived:
    action: str


@dataclass(frozen=True)
class CueAckReceived:
    """A scribe's sealed reply to a cue (the relay cannot read or forge it)."""

    message: msgs.CueAck


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
class PuckConsent:
    """The physician's double press: the patient agreed (only while consent is wanted)."""


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
class UpdatePhase:
    """The updater's phase: update_gate.NONE, FETCHING or READY."""

    phase: str


@dataclass(frozen=True)
class TrialVerdict:
    """This release's health check on trial: trial.PASS or trial.FAIL."""

    state: str
    reason: str = ""


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
    reply: str = "seen"


@dataclass(frozen=True)
class PuckCueNotSent:
    """That press reached no scribe (it started the next visit): the ring stops saying so."""

    cue_id: int


@dataclass(frozen=True)
class WantConsent:
    """The puck asks for consent (a double press gives it), or stops asking."""

    wanted: bool


@dataclass(frozen=True)
class PublishStatus:
    status: msgs.Status


@dataclass(frozen=True)
class SaveAssignment:
    """Keep the last checked assignment: the unit records offline with it after a restart."""

    message: msgs.Assignment


@dataclass(frozen=True)
class SaveConfig:
    """Keep the relay's last `config` message, so it holds while the unit is offline."""

    message: msgs.Config


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


@dataclass(frozen=True)
class InstallUpdate:
    """Between sessions, nothing unsent: hand the verified release to the installer."""


Effect = (Spool | ShowLight | PuckCueSeen | PuckCueNotSent | WantConsent | PublishStatus
          | SaveAssignment | SaveConfig | OpenCapture | CloseCapture | Replay | Log | Done
          | InstallUpdate)


# ---------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CoreSettings:
    unit_id: str
    sample_rate: int = 16000
    channels: int = 4
    chunk_ms: int = 40
    dsp_mode: str = "on"
    dsp_array: str = "respeaker-4mic-pi"
    codec: codecs.CodecSettings = field(default_factory=codecs.CodecSettings)
    auto_open: bool = True
    privacy_auto_resume_s: float = 0.0
    # the clinic's option: a session captures nothing until consent is recorded (the
    # physician's double press, or a scribe confirming the read-back); a declined visit
    # captures nothing at all
    consent_required: bool = False
    # file-backed input (demo, tests): stop after this many frames; resume where sealed
    stop_after_frames: int = 0
    resume_input: bool = False
    exit_when_done: bool = False
    version: str = ""
    update_policy: update_gate.Policy = field(default_factory=update_gate.Policy)
    # a release on trial that cannot prove itself healthy in this long records anyway
    trial_hold_max_s: float = 300.0


# ---------------------------------------------------------------------------- the core


@dataclass(frozen=True)
class Assigned:
    """A checked assignment: the authority-signed room and scribes, and the endorsed,
    unrevoked devices of those scribes (the only keys a session is wrapped to)."""

    room: str
    scribes: tuple[str, ...]
    issued_us: int
    devices: dict[str, trust.Device]

    def recipients(self) -> list[tuple[str, str, X25519PublicKey]]:
        return [(d.scribe, d.device, X25519PublicKey.from_public_bytes(d.enc_key))
                for d in sorted(self.devices.values(), key=lambda d: (d.scribe, d.device))]


class UnitCore:
    def __init__(
        self,
        settings: CoreSettings,
        *,
        signer: Signer,
        authority: Ed25519PublicKey | None,
        recovery: X25519PublicKey | None = None,
        input_frames: int = 0,
        cues_seen: list[int] | None = None,
        config: msgs.Config | None = None,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """`authority`: the clinic authority pinned at provisioning; without it the unit
        wraps to nobody. `signer`: the unit's signing key and its binding."""
        self.s = settings
        # what sessions are encoded with: the unit's own [codec], unless the relay said
        # otherwise (its last `config` message, kept across restarts)
        self.codec = settings.codec
        if config:
            try:
                self.codec = self._codec_from(config)
                self.codec.check_chunk_ms(settings.chunk_ms)
            except (ValueError, KeyError, TypeError):
                self.codec = settings.codec
        self.signer = signer
        self.authority = authority
        self.recovery = recovery
        self.assigned: Assigned | None = None
        self.revocations = trust.Revocations()
        self._rejected_devices: list[str] = []
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
        # consent, when the clinic requires it: None (no session, or not required),
        # "pending" (nothing captured), "given", "declined"
        self.consent: str | None = None
        self._consent_hold = False  # declined: no new session until the next visit starts
        self._holding = False  # an update or a trial holds the device (set every tick)
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
        self._last_status = float("-inf")  # last looked at
        self._status_sent = float("-inf")
        self._status_gist: dict | None = None
        self._done = False
        # updates: the lock (update_gate) and, on a release just switched to, its trial
        self.update_phase = update_gate.NONE
        self.gate = update_gate.Gate(False, False, "no update")
        self._hold_since: float | None = None
        self._install_requested = False
        self.trial = False
        self._trial_since = 0.0
        self.trial_state: str | None = None  # None (no trial), pending, pass, fail, expired

    # ------------------------------------------------------------------ entry point

    def handle(self, event, now: Now) -> list[Effect]:
        out: list[Effect] = []
        handler = getattr(self, "_on_" + type(event).__name__)
        handler(event, now, out)
        self._light(out)
        return out

    # ------------------------------------------------------------------ lifecycle

    def _on_Start(self, e: Start, now: Now, out: list) -> None:
        if e.trial:
            self.trial, self._trial_since, self.trial_state = True, now.mono_s, "pending"
            out.append(Log("info", "trial_started", {"version": self.s.version}))
        if e.stale_session:
            # the last process died with this session open; its key died with it, so it
            # cannot continue: close it, so the scribe is not left waiting for more
            close = close_message(self.s.unit_id, e.stale_session, now.wall_us,
                                  e.stale_last_audio_seq, e.stale_last_event_seq,
                                  "unit_restart", self.signer)
            out.append(Spool((Record(topics.SESSION, msgs.dumps(close), "session",
                                     e.stale_session),), {"open_session": ""}))
            out.append(Log("warning", "stale_session_closed", {"session": e.stale_session[:8]}))

    def _on_Stop(self, e: Stop, now: Now, out: list) -> None:
        if self.session is not None and not self.captured_done:
            self._close_session("agent_stopped", now, out)
        if self.capture != "closed":
            out.append(CloseCapture())
            self.capture = "closed"
        self._publish_status(now, out)

    def _on_Tick(self, e: Tick, now: Now, out: list) -> None:
        self.health = e.health
        if self.privacy_paused and self.s.privacy_auto_resume_s and \
                self._paused_since is not None and \
                now.mono_s - self._paused_since > self.s.privacy_auto_resume_s:
            self._toggle_privacy(now, out)
        update_hold = self._update_gate(e.health, now, out)
        hold = self._trial_holding(now, out) or update_hold
        self._holding = hold
        if self._may_open():
            self._open_session(now, out)
        if hold and self.session is None and self.capture in ("open", "opening"):
            # between encounters: free the device for the next release (a file-backed
            # input resumes where it was sealed)
            out.append(CloseCapture())
            self.capture = "closed"
        if self.session is not None and self.capture == "failed" and \
                self.consent != "pending" and now.mono_s >= self._capture_retry_at:
            self.capture = "opening"
            out.append(OpenCapture(self._resume_skip()))
        if self.captured_done and self.s.exit_when_done and e.health.spool_empty \
                and not self._done:
            self._done = True
            out.append(Log("info", "done", {"input_frames": self.input_frames}))
            out.append(Done())
        if now.mono_s - self._last_status >= STATUS_INTERVAL_S:
            self._last_status = now.mono_s
            self._publish_status(now, out, force=False)

    # ------------------------------------------------------------------ updates

    def _update_gate(self, health: Health, now: Now, out: list) -> bool:
        """The update lock, once a tick; True while the next session must wait."""
        if self.update_phase == update_gate.NONE:
            self._hold_since = None
            self.gate = update_gate.Gate(False, False, "no update")
            return False
        unacked = 0 if health.spool_empty else max(1, int(health.spool.get("records", 1)))
        held = None if self._hold_since is None else now.mono_s - self._hold_since
        gate = update_gate.decide(phase=self.update_phase, session_open=self.session is not None,
                                  unacked_records=unacked, minute_of_day=health.minute_of_day,
                                  held_s=held, policy=self.s.update_policy)
        if gate.reason != self.gate.reason:
            out.append(Log("info", "update_gate", {"phase": self.update_phase,
                                                   "install": gate.install,
                                                   "hold": gate.hold_next_session,
                                                   "reason": gate.reason}))
        self.gate = gate
        if gate.hold_next_session and self._hold_since is None:
            self._hold_since = now.mono_s
        elif self.session is not None:
            self._hold_since = None  # a new hold starts at the next boundary
        if gate.install and not self._install_requested:
            self._install_requested = True
            out.append(InstallUpdate())
        return gate.hold_next_session

    def _trial_holding(self, now: Now, out: list) -> bool:
        if self.trial_state not in ("pending", "fail"):
            return False
        if now.mono_s - self._trial_since >= self.s.trial_hold_max_s:
            # nobody switched back in time: recording matters more than the verdict
            out.append(Log("warning", "trial_hold_expired", {
                "version": self.s.version, "after_s": self.s.trial_hold_max_s}))
            self.trial_state = "expired"
            return False
        return True

    def _on_UpdatePhase(self, e: UpdatePhase, now: Now, out: list) -> None:
        if e.phase not in update_gate.PHASES:
            raise ValueError(f"unknown update phase {e.phase!r}")
        if e.phase != update_gate.READY:
            self._install_requested = False
        self.update_phase = e.phase

    def _on_TrialVerdict(self, e: TrialVerdict, now: Now, out: list) -> None:
        if self.trial_state not in ("pending", "fail"):
            return
        self.trial_state = e.state
        level = "info" if e.state == "pass" else "error"
        out.append(Log(level, "trial_verdict", {"version": self.s.version, "state": e.state,
                                                "reason": e.reason}))

    # ------------------------------------------------------------------ control

    def _on_AssignmentReceived(self, e: AssignmentReceived, now: Now, out: list) -> None:
        try:
            assigned, revocations = self._check_assignment(e.message)
        except trust.TrustError as err:
            self.alarms.setdefault("assignment_rejected", now.wall_us)
            out.append(Log("error", "assignment_rejected", {"why": str(err)}))
            return
        self.alarms.pop("assignment_rejected", None)
        # a device statement that does not hold (forged, or a key no session could be
        # wrapped to) is skipped, with an alarm: capture goes on for the others
        self._bad_recipients([f"device endorsement refused: {why}"
                              for why in self._rejected_devices], now, out)
        before = self.assigned
        self.assigned, self.revocations = assigned, revocations
        out.append(SaveAssignment(e.message))
        out.append(Log("info", "assignment", {"scribes": len(assigned.scribes),
                                              "devices": len(assigned.devices)}))
        s = self.session
        if s is None or before is None:
            return
        gone = s.devices - set(assigned.devices)
        if gone or set(before.scribes) != set(assigned.scribes):
            # a device that holds this session's key is no longer meant to, or the room has
            # other scribes now (who must not get the encounter so far): the session ends
            # here, and the next is wrapped to who is assigned now
            self._close_session("reassigned", now, out)
            return
        added, errors = s.add_recipients(assigned.recipients(), now.wall_us)
        self._bad_recipients(errors, now, out)
        if added is not None:
            # a newly endorsed device of an assigned scribe joins the running session
            self._spool(out, [self._rec(topics.SESSION, msgs.dumps(added), "session")])
            out.append(Log("info", "recipients_added", {"session": s.hex[:8],
                                                        "devices": len(added.recipients)}))

    def _check_assignment(self, m: msgs.Assignment) -> tuple[Assigned, trust.Revocations]:
        """Everything the relay hands over is checked here, against the pinned authority."""
        if self.authority is None:
            raise trust.TrustError("no clinic authority is pinned on this unit (provision it)")
        body = trust.verify_assignment(self.authority, m.assignment, self.s.unit_id)
        if self.assigned is not None and body["issued_us"] < self.assigned.issued_us:
            raise trust.TrustError("an older assignment than the one this unit holds (rollback)")
        revocations = self.revocations
        if m.revocations is not None:
            got = trust.verify_revocations(self.authority, m.revocations)
            if got.serial >= revocations.serial:
                revocations = got
        rejected: list[str] = []
        devices = trust.endorsed_devices(self.authority, list(m.devices),
                                         revoked=revocations.devices, rejected=rejected)
        self._rejected_devices = rejected
        scribes = tuple(body["scribes"])
        mine = {k: d for k, d in devices.items() if d.scribe in scribes}
        return Assigned(str(body.get("room") or ""), scribes, body["issued_us"], mine), \
            revocations

    def _bad_recipients(self, errors: list[str], now: Now, out: list) -> None:
        for err in errors:
            self.alarms["bad_recipient_key"] = now.wall_us
            out.append(Log("error", "recipient_skipped", {"why": err}))

    def _codec_from(self, config: msgs.Config) -> codecs.CodecSettings:
        a = config.audio
        return replace(self.s.codec, codec=a["codec"], bitrate=int(a["bitrate"]))

    def _on_ConfigReceived(self, e: ConfigReceived, now: Now, out: list) -> None:
        try:
            wanted = self._codec_from(e.message)
            wanted.check_chunk_ms(self.s.chunk_ms)
        except (ValueError, KeyError, TypeError) as err:
            self.last_error = f"relay config refused: {err}"
            out.append(Log("error", "config_refused", {"error": str(err)}))
            return
        out.append(SaveConfig(e.message))
        if wanted == self.codec:
            return
        self.codec = wanted
        out.append(Log("info", "config", {"codec": wanted.codec, "bitrate": wanted.bitrate}))
        if self.session is not None:
            # a session has one codec (its session_open says which): start a new one
            self._close_session("reconfigured", now, out)

    def _may_open(self) -> bool:
        """Whether a session opens now by itself (auto_open, a scribe's device, no update
        or trial holding the device, no declined visit waiting for the next one)."""
        return (self.session is None and not self.captured_done and self.s.auto_open
                and self.assigned is not None and bool(self.assigned.devices)
                and not self._holding and not self._consent_hold)

    def _on_SessionControlReceived(self, e: SessionControlReceived, now: Now, out: list) -> None:
        if e.action == "close" and self.session is not None:
            self._close_session("closed_by_relay", now, out)
            # the next encounter opens in the same step: audio captured meanwhile is never
            # dropped between sessions (a relay closing sessions cannot make loss unseen).
            # Not while an update or a trial may want this boundary: the next tick decides.
            if self.update_phase == update_gate.NONE and \
                    self.trial_state not in ("pending", "fail") and self._may_open():
                self._open_session(now, out)
        elif e.action == "open" and self._consent_hold:
            self._next_visit("session_control", out)

    def _on_CueAckReceived(self, e: CueAckReceived, now: Now, out: list) -> None:
        s, m = self.session, e.message
        if s is None or m.session != s.hex or self.assigned is None:
            out.append(Log("info", "cue_reply_ignored", {"why": "not the open session"}))
            return
        try:
            body = s.open_reply(m.sealed)
            device = self.assigned.devices.get(str(body.get("device")))
            if device is None or device.device not in s.devices:
                raise trust.TrustError("from a device that does not hold this session")
            trust.verify_reply(body, unit=self.s.unit_id, session_hex=s.hex, device=device)
        except trust.TrustError as err:
            self.alarms["cue_reply_rejected"] = now.wall_us
            out.append(Log("warning", "cue_reply_rejected", {"why": str(err)}))
            return
        reply = str(body["reply"])
        if reply not in msgs.CUE_REPLIES and reply not in msgs.CONSENT_REPLIES:
            out.append(Log("warning", "cue_reply_rejected", {"why": "unknown reply"}))
            return
        if device.kind != "person":
            # only a person's reply lights the physician's puck, or records consent
            out.append(Log("info", "cue_reply_from_robot", {"cue_id": body["cue_id"]}))
            return
        if reply in msgs.CONSENT_REPLIES:
            # a scribe confirmed the consent read-back (or that the patient declined)
            if self.consent != "pending":
                out.append(Log("info", "consent_reply_ignored", {"consent": self.consent}))
                return
            self._record_consent(reply == "consent_given", "scribe", now, out)
            return
        out.append(Log("info", "cue_reply", {"cue_id": body["cue_id"], "reply": reply}))
        out.append(PuckCueSeen(int(body["cue_id"]), reply))

    def _on_ReplayRequested(self, e: ReplayRequested, now: Now, out: list) -> None:
        out.append(Replay(e.since_us))

    # ------------------------------------------------------------------ the puck

    def _on_PuckCue(self, e: PuckCue, now: Now, out: list) -> None:
        if e.cue_id in self.cues_seen:
            return  # the same press again (the puck retransmits across an agent restart)
        if self.session is None and self._consent_hold:
            # after a declined visit, the physician's next press starts the next one
            self.cues_seen = [*self.cues_seen, e.cue_id][-CUE_MEMORY:]
            self._next_visit("press", out)
            # no scribe hears of that press: the ring must not show a cue waiting (it would
            # also hide the consent request of the visit it starts)
            out.append(PuckCueNotSent(e.cue_id))
            return
        if self.session is None:
            out.append(Log("warning", "cue_without_session", {"cue_id": e.cue_id}))
            return
        self.cues_seen = [*self.cues_seen, e.cue_id][-CUE_MEMORY:]
        seq, sealed = self.session.seal_event("cue", now.wall_us, cue_id=e.cue_id)
        self._spool(out, [self._rec(topics.EVENT, sealed, "event", seq=seq)],
                    {"cues_seen": ",".join(map(str, self.cues_seen))})
        out.append(Log("info", "cue", {"cue_id": e.cue_id, "seq": seq}))

    def _on_PrivacyToggle(self, e: PrivacyToggle, now: Now, out: list) -> None:
        if self.consent == "pending":
            # the privacy gesture while the unit asks for consent: the patient declined
            self._record_consent(False, "physician", now, out)
            return
        self._toggle_privacy(now, out)

    def _on_PuckConsent(self, e: PuckConsent, now: Now, out: list) -> None:
        if self.consent != "pending":
            out.append(Log("info", "consent_press_ignored", {"consent": self.consent}))
            return
        self._record_consent(True, "physician", now, out)

    # ------------------------------------------------------------------ consent

    def _record_consent(self, given: bool, by: str, now: Now, out: list) -> None:
        """Consent recorded: a signed, sealed event in the record, then capture starts (from
        this moment: nothing before it was captured), or the visit ends with nothing."""
        s = self.session
        assert s is not None and self.consent == "pending"
        state = "given" if given else "declined"
        fields = {"audio_seq": s.next_audio_seq} if given else {}
        seq, sealed = s.seal_event("consent", now.wall_us, state=state, by=by, **fields)
        self._spool(out, [self._rec(topics.EVENT, sealed, "event", seq=seq)])
        self.consent = state
        out.append(WantConsent(False))
        out.append(Log("info", "consent", {"state": state, "by": by}))
        if not given:
            self._close_session("consent_declined", now, out)
            self._consent_hold = True  # the next visit starts with the physician's press
            self.consent = "declined"
            self._publish_status(now, out)  # the room's state changed: say it now
            return
        self._publish_status(now, out)
        # capture times start true from here
        self.chunker = Chunker(sample_rate=self.s.sample_rate, chunk_ms=self.s.chunk_ms,
                               start_us=now.wall_us)
        self.dsp = self._make_dsp()
        self._dsp_in, self._dsp_in_frames = [], 0
        if self.capture == "closed":
            self.capture = "opening"
            out.append(OpenCapture(self._resume_skip()))

    def _next_visit(self, how: str, out: list) -> None:
        self._consent_hold = False
        self.consent = None
        out.append(Log("info", "next_visit", {"by": how}))

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
            lost_ms = (now.wall_us - was_lost) // 1000
            out.append(Log("info", "capture_resumed", {"lost_ms": lost_ms}))

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
            self._publish_status(now, out)  # tell the scribe now, not in a second
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
        if self.session is None or self.captured_done or self.consent == "pending":
            return  # (while consent is pending the device is closed: nothing gets here)
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

    def _make_dsp(self):
        return make_stage(self.s.dsp_mode, channels=self.s.channels,
                          sample_rate=self.s.sample_rate, array=self.s.dsp_array)

    def _open_session(self, now: Now, out: list) -> None:
        assert self.assigned is not None
        codec = self.codec
        if codec.codec == "opus" and not codecs.opus_available():
            # record anyway: a unit that cannot encode Opus sends PCM, and says why
            self.last_error = "Opus unavailable on this unit (install libopus0); sending PCM"
            out.append(Log("error", "opus_unavailable", {}))
            codec = replace(codec, codec="pcm_s16le")
        pending = self.s.consent_required
        try:
            s = self.session = Session(
                unit_id=self.s.unit_id, scribes=self.assigned.recipients(),
                recovery=self.recovery, signer=self.signer, sample_rate=self.s.sample_rate,
                chunk_ms=self.s.chunk_ms, started_us=now.wall_us, room=self.assigned.room,
                codec=codec, session_id=self.rng(16), session_key=self.rng(32),
                consent="pending" if pending else "not_required")
        except ValueError as err:  # not one recipient could be wrapped to
            self.alarms["bad_recipient_key"] = now.wall_us
            out.append(Log("error", "session_not_opened", {"why": str(err)}))
            return
        self._bad_recipients(s.refused, now, out)
        self.chunker = Chunker(sample_rate=self.s.sample_rate, chunk_ms=self.s.chunk_ms,
                               start_us=now.wall_us)
        self.dsp = self._make_dsp()
        self._dsp_in, self._dsp_in_frames = [], 0
        self.privacy_paused = False
        seq, start = s.seal_event("session_start", now.wall_us)
        records = [self._rec(topics.SESSION, msgs.dumps(s.open_message()), "session"),
                   self._rec(topics.EVENT, start, "event", seq=seq)]
        if pending:
            seq, asked = s.seal_event("consent", now.wall_us, state="pending", by="unit")
            records.append(self._rec(topics.EVENT, asked, "event", seq=seq))
        self._spool(out, records, {"open_session": s.hex})
        out.append(Log("info", "session_open", {"session": s.hex[:8]}))
        if pending:
            # nothing is captured until consent: the device stays closed until then
            self.consent = "pending"
            out.append(WantConsent(True))
            if self.capture in ("open", "opening"):
                out.append(CloseCapture())
                self.capture = "closed"
            return
        self.consent = None
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
        if self.consent == "pending":
            out.append(WantConsent(False))
        self.consent = None
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
        gap = gap_message(self.s.unit_id, session, stream, first, last, reason, at, self.signer)
        self.last_gap = {"session": session, "stream": stream, "first_seq": first,
                         "last_seq": last, "reason": reason, "at_us": at}
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
        if self.session is None or self.consent == "pending":
            return "idle"  # nothing is being recorded (the puck asks for consent meanwhile)
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
        if self.session is None or self.consent == "pending":
            return "idle"
        return "paused" if self.privacy_paused else "live"

    def _publish_status(self, now: Now, out: list, force: bool = True) -> None:
        """Send the status if `force` (something the scribe must see now happened), if what
        it says changed, or if the last one went out STATUS_HEARTBEAT_S ago."""
        status = self.status(now)
        gist = status_gist(status)
        if force or gist != self._status_gist or \
                now.mono_s - self._status_sent >= STATUS_HEARTBEAT_S:
            self._status_gist = gist
            self._status_sent = now.mono_s
            out.append(PublishStatus(status))

    def status(self, now: Now) -> msgs.Status:
        h = self.health
        dsp: dict = self.dsp.stats() if self.dsp is not None else {}
        return msgs.Status(
            unit=self.s.unit_id,
            at_us=now.wall_us,
            link="up" if h.link_up else "down",
            catching_up=h.catching_up,
            session=self.session.hex if self.session else None,
            capture=self.capture_state(),
            capture_error=self.capture_error,
            capture_overruns=self.capture_overruns,
            spool=h.spool,
            inflight=h.inflight,
            # coarse health only: which mics are dead or clipping, never levels or speech
            mics={"dead": list(dsp.get("dead_channels", [])),
                  "clipping": list(dsp.get("clipping_channels", []))},
            audio={"codec": self.codec.codec, "bitrate": self.codec.bitrate},
            last_error=self.last_error or h.uplink_error,
            last_gap=self.last_gap,
            alarms=tuple(sorted({*self.alarms, *(("certificate",) if h.certificate_alarm
                                                  else ())})),
            puck=None if h.puck_connected is None else {"connected": h.puck_connected,
                                                        "led": self.light},
            version=self.s.version or None,
            update=self._update_status(),
            consent=self.consent,
        )

    def _update_status(self) -> dict | None:
        u = dict(self.health.update or {})
        if self.update_phase != update_gate.NONE:
            u["gate"] = self.gate.reason
        if self.trial_state is not None:
            u["trial"] = self.trial_state
        return u or None
