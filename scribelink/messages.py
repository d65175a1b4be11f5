"""The JSON messages between unit, relay and scribe (docs/protocol.md): the one owner.

Every message is a frozen dataclass with `to_dict()` and `from_dict()`, defaults on every
optional field, and unknown keys ignored on the way in, so old and new peers interoperate.
Nobody builds these dicts by hand. `from_dict` validates and raises MessageError with
what is wrong; it bounds every number and length before anything is allocated.

Two words name kinds, and they never mix: `type` is the JSON message's type (session_open,
gap, assignment, status, ...); `kind` is a sealed event's kind inside an envelope (cue,
privacy_pause, ...) and a spool record's or recipient's kind.

What a unit says about its sessions -- SessionOpen, SessionClose, Gap, RecipientsAdded
and every event body -- carries `sig`, the unit's Ed25519 signature (scribelink.trust),
and SessionOpen carries the authority-rooted `binding` of that key to the unit id.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from scribelink import envelope as env

SCHEMA_VERSION = 1
MAX_JSON_BYTES = 64 * 1024
MAX_SEQ = 1 << 40  # 1.4 years of 40 ms chunks in one session: anything above is hostile
MAX_RECIPIENTS = 64

SESSION_TYPES = ("session_open", "session_close", "gap", "recipients_added")
CONTROL_TYPES = ("assignment", "session_control", "cue_ack", "replay", "config")
EVENT_KINDS = ("cue", "privacy_pause", "privacy_resume", "session_start", "session_end",
               "consent")
# spool_full / spool_age: the spool evicted unsent records; capture_lost: the capture
# device failed and that stretch of the session was never captured
GAP_REASONS = ("spool_full", "spool_age", "capture_lost")
CLOSE_REASONS = ("ended", "input_complete", "reassigned", "closed_by_relay", "agent_stopped",
                 "unit_restart", "update", "reconfigured")
CUE_REPLIES = ("seen", "got_it", "repeat", "see_me")


class MessageError(ValueError):
    pass


def dumps(msg: dict | Message) -> bytes:
    if isinstance(msg, Message):
        msg = msg.to_dict()
    return json.dumps(msg, separators=(",", ":"), sort_keys=True).encode()


def loads(data: bytes | str, *, what: str = "message") -> dict:
    if len(data) > MAX_JSON_BYTES:
        raise MessageError(f"{what} too large ({len(data)} bytes)")
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise MessageError(f"{what} is not JSON: {e}") from e
    if not isinstance(msg, dict):
        raise MessageError(f"{what} must be a JSON object")
    return msg


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# ---------------------------------------------------------------------------- field checks


def _int(d: dict, k: str, *, lo: int = 0, hi: int = 1 << 62, default: Any = ...) -> int:
    v = d.get(k, default)
    if v is ... or isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise MessageError(f"{k} must be an integer in {lo}..{hi}")
    return v


def _str(d: dict, k: str, *, max_len: int = 256, default: Any = ...,
         choices: tuple[str, ...] | None = None) -> str:
    v = d.get(k, default)
    if v is ... or not isinstance(v, str) or len(v) > max_len:
        raise MessageError(f"{k} must be text (at most {max_len} characters)")
    if choices is not None and v not in choices:
        raise MessageError(f"{k} must be one of {', '.join(choices)}, got {v!r}")
    return v


def _opt_str(d: dict, k: str, *, max_len: int = 256) -> str | None:
    return None if d.get(k) is None else _str(d, k, max_len=max_len)


def _session(d: dict) -> str:
    s = _str(d, "session", max_len=2 * env.SESSION_ID_LEN)
    try:
        if len(bytes.fromhex(s)) != env.SESSION_ID_LEN:
            raise ValueError
    except ValueError as e:
        raise MessageError("session must be 32 hex digits") from e
    return s


def _unit(d: dict) -> str:
    return _str(d, "unit", max_len=env.MAX_UNIT_ID_LEN)


def _dict(d: dict, k: str, *, optional: bool = False) -> dict | None:
    v = d.get(k)
    if v is None and optional:
        return None
    if not isinstance(v, dict):
        raise MessageError(f"{k} must be an object")
    return v


class Message:
    """Base of every typed message: `to_dict` puts `type` and `v` in, `from_dict` checks."""

    TYPE: ClassVar[str] = ""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"v": SCHEMA_VERSION, "type": self.TYPE}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = [x.to_dict() if hasattr(x, "to_dict") else x for x in v]
            elif hasattr(v, "to_dict"):
                v = v.to_dict()
            out[f.name] = v
        return out

    def unsigned(self) -> dict:
        """The dict whose canonical form the unit signs (everything but `sig`)."""
        d = self.to_dict()
        d.pop("sig", None)
        return d


def _check_type(d: dict, t: str) -> None:
    if d.get("type") != t:
        raise MessageError(f"expected a {t} message, got {d.get('type')!r}")


# ---------------------------------------------------------------------------- session topic


@dataclass(frozen=True)
class Recipient:
    """One wrapped copy of the session key: to a scribe's device, or the clinic's
    recovery key."""

    kind: str  # scribe | recovery
    id: str  # scribe id, or "clinic-recovery"
    key_id: str  # env.key_id of the X25519 key it is wrapped to
    wrapped_key: str  # base64 HPKE enc || ct
    device: str = ""  # the scribe device's id (trust.Device.device)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "id": self.id, "key_id": self.key_id,
                "wrapped_key": self.wrapped_key, "device": self.device}

    @classmethod
    def from_dict(cls, d: Any) -> Recipient:
        if not isinstance(d, dict):
            raise MessageError("malformed recipient")
        r = cls(kind=_str(d, "kind", choices=("scribe", "recovery")),
                id=_str(d, "id", max_len=64), key_id=_str(d, "key_id", max_len=16),
                wrapped_key=_str(d, "wrapped_key", max_len=200),
                device=_str(d, "device", max_len=16, default=""))
        try:
            if len(base64.b64decode(r.wrapped_key, validate=True)) != 80:
                raise ValueError
        except ValueError as e:
            raise MessageError("recipient: wrapped_key must be 80 bytes of base64") from e
        return r

    def wrapped(self) -> bytes:
        return base64.b64decode(self.wrapped_key)


def _recipients(d: dict, *, required: bool = True) -> tuple[Recipient, ...]:
    rec = d.get("recipients")
    if not isinstance(rec, list) or (required and not rec) or len(rec) > MAX_RECIPIENTS:
        raise MessageError(f"recipients must be a list of 1..{MAX_RECIPIENTS}")
    return tuple(Recipient.from_dict(r) for r in rec)


@dataclass(frozen=True)
class SessionOpen(Message):
    TYPE: ClassVar[str] = "session_open"
    unit: str
    session: str
    started_us: int
    sample_rate: int
    chunk_ms: int
    recipients: tuple[Recipient, ...]
    room: str = ""
    codec: str = "pcm_s16le"
    channels: int = 1
    suite: str = env.SUITE_NAME
    consent: str = "not_required"  # not_required | pending (the clinic requires consent)
    binding: dict | None = None  # trust statement: the unit's signing key, authority-rooted
    sig: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> SessionOpen:
        _check_type(d, cls.TYPE)
        return cls(unit=_unit(d), session=_session(d),
                   started_us=_int(d, "started_us"),
                   sample_rate=_int(d, "sample_rate", lo=8000, hi=48000),
                   chunk_ms=_int(d, "chunk_ms", lo=20, hi=200),
                   recipients=_recipients(d), room=_str(d, "room", max_len=128, default=""),
                   codec=_str(d, "codec", max_len=32, default="pcm_s16le"),
                   channels=_int(d, "channels", lo=1, hi=1, default=1),
                   suite=_str(d, "suite", max_len=128, default=env.SUITE_NAME),
                   consent=_str(d, "consent", default="not_required",
                                choices=("not_required", "pending")),
                   binding=_dict(d, "binding", optional=True), sig=_str(d, "sig", default=""))

    def recipient_for(self, key_id: str) -> Recipient | None:
        return next((r for r in self.recipients if r.key_id == key_id), None)


@dataclass(frozen=True)
class RecipientsAdded(Message):
    """A device endorsed during the session joins it: the same session key, wrapped to it."""

    TYPE: ClassVar[str] = "recipients_added"
    unit: str
    session: str
    at_us: int
    recipients: tuple[Recipient, ...]
    sig: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> RecipientsAdded:
        _check_type(d, cls.TYPE)
        return cls(unit=_unit(d), session=_session(d), at_us=_int(d, "at_us"),
                   recipients=_recipients(d), sig=_str(d, "sig", default=""))


@dataclass(frozen=True)
class SessionClose(Message):
    TYPE: ClassVar[str] = "session_close"
    unit: str
    session: str
    ended_us: int
    last_audio_seq: int  # -1: no audio (or unknown after a crash)
    last_event_seq: int
    reason: str = "ended"
    sig: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> SessionClose:
        _check_type(d, cls.TYPE)
        return cls(unit=_unit(d), session=_session(d), ended_us=_int(d, "ended_us"),
                   last_audio_seq=_int(d, "last_audio_seq", lo=-1, hi=MAX_SEQ),
                   last_event_seq=_int(d, "last_event_seq", lo=-1, hi=MAX_SEQ),
                   reason=_str(d, "reason", max_len=32, choices=CLOSE_REASONS),
                   sig=_str(d, "sig", default=""))


@dataclass(frozen=True)
class Gap(Message):
    """Declared loss: sequence numbers first..last (inclusive) of `stream` will never come."""

    TYPE: ClassVar[str] = "gap"
    unit: str
    session: str
    stream: str
    first_seq: int
    last_seq: int
    reason: str
    at_us: int
    sig: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> Gap:
        _check_type(d, cls.TYPE)
        g = cls(unit=_unit(d), session=_session(d),
                stream=_str(d, "stream", choices=("audio", "event")),
                first_seq=_int(d, "first_seq", hi=MAX_SEQ), last_seq=_int(d, "last_seq",
                                                                          hi=MAX_SEQ),
                reason=_str(d, "reason", choices=GAP_REASONS), at_us=_int(d, "at_us"),
                sig=_str(d, "sig", default=""))
        if g.last_seq < g.first_seq:
            raise MessageError("gap: last_seq < first_seq")
        return g


def wrapped_key_for(open_msg: dict | SessionOpen, key_id: str) -> bytes | None:
    """The session key as wrapped to the X25519 key `key_id`, if this session has it."""
    m = open_msg if isinstance(open_msg, SessionOpen) else SessionOpen.from_dict(open_msg)
    r = m.recipient_for(key_id)
    return None if r is None else r.wrapped()


SESSION_MESSAGES: dict[str, type] = {
    "session_open": SessionOpen, "session_close": SessionClose, "gap": Gap,
    "recipients_added": RecipientsAdded,
}


def session_message(d: dict) -> SessionOpen | SessionClose | Gap | RecipientsAdded:
    """Parse and check a session-topic message of any type."""
    cls = SESSION_MESSAGES.get(d.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise MessageError(f"unknown session message type {d.get('type')!r}")
    return cls.from_dict(d)


# ---------------------------------------------------------------------------- sealed events


@dataclass(frozen=True)
class Event:
    """The body of a TYPE_EVENT envelope. `at_us` is the unit's wall clock.

    Fields by kind: cue {cue_id}; privacy_pause / privacy_resume {audio_seq: the next
    audio seq}; session_end {reason}; consent {state: given | declined | pending,
    by: physician | scribe}; session_start {}. Signed by the unit over the body and the
    envelope's session and seq (scribelink.trust.sign_message, domain "event")."""

    kind: str
    at_us: int
    cue_id: int | None = None
    audio_seq: int | None = None
    reason: str | None = None
    state: str | None = None
    by: str | None = None
    sig: str = ""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"v": SCHEMA_VERSION, "kind": self.kind, "at_us": self.at_us}
        for k in ("cue_id", "audio_seq", "reason", "state", "by"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        if self.sig:
            out["sig"] = self.sig
        return out

    def unsigned(self) -> dict:
        d = self.to_dict()
        d.pop("sig", None)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Event:
        kind = _str(d, "kind", choices=EVENT_KINDS)
        e = cls(kind=kind, at_us=_int(d, "at_us"),
                cue_id=_int(d, "cue_id", hi=1 << 48) if "cue_id" in d else None,
                audio_seq=_int(d, "audio_seq", hi=MAX_SEQ) if "audio_seq" in d else None,
                reason=_opt_str(d, "reason", max_len=32), state=_opt_str(d, "state", max_len=16),
                by=_opt_str(d, "by", max_len=16), sig=_str(d, "sig", default=""))
        need = {"cue": e.cue_id, "privacy_pause": e.audio_seq, "privacy_resume": e.audio_seq,
                "session_end": e.reason, "consent": e.state}
        if kind in need and need[kind] is None:
            raise MessageError(f"{kind} event is missing its field")
        return e

    @classmethod
    def parse(cls, body: bytes) -> Event:
        return cls.from_dict(loads(body, what="event"))


# ---------------------------------------------------------------------------- control (relay -> unit)


@dataclass(frozen=True)
class Assignment(Message):
    """Retained on the unit's control topic. The relay only carries it: `assignment`,
    `devices` and `revocations` are trust statements signed by the clinic authority (or,
    for a device, by a sibling device of the same scribe), which the unit checks itself."""

    TYPE: ClassVar[str] = "assignment"
    unit: str
    assignment: dict  # trust statement (t = "assignment")
    devices: tuple[dict, ...] = ()  # trust statements (t = "device")
    revocations: dict | None = None  # trust statement (t = "revocations")
    issued_us: int = 0

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["devices"] = list(self.devices)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Assignment:
        _check_type(d, cls.TYPE)
        devices = d.get("devices") or []
        if not isinstance(devices, list) or len(devices) > 256 or \
                not all(isinstance(x, dict) for x in devices):
            raise MessageError("assignment: devices must be a list of statements")
        return cls(unit=_unit(d), assignment=_dict(d, "assignment"), devices=tuple(devices),
                   revocations=_dict(d, "revocations", optional=True),
                   issued_us=_int(d, "issued_us", default=0))


@dataclass(frozen=True)
class SessionControl(Message):
    TYPE: ClassVar[str] = "session_control"
    unit: str
    action: str  # open | close

    @classmethod
    def from_dict(cls, d: dict) -> SessionControl:
        _check_type(d, cls.TYPE)
        return cls(unit=_unit(d), action=_str(d, "action", choices=("open", "close")))


@dataclass(frozen=True)
class CueAck(Message):
    """A scribe's reply to a cue, end to end: `sealed` is opened by the unit with the
    session key (scribelink.trust: seal_reply / open_reply) and carries the replying
    device's signature. The relay forwards it and can neither read nor forge it."""

    TYPE: ClassVar[str] = "cue_ack"
    unit: str
    session: str
    sealed: str  # base64

    @classmethod
    def from_dict(cls, d: dict) -> CueAck:
        _check_type(d, cls.TYPE)
        return cls(unit=_unit(d), session=_session(d), sealed=_str(d, "sealed", max_len=4096))


@dataclass(frozen=True)
class Replay(Message):
    """The relay's broker lost state: offer again what was acked since `since_us`."""

    TYPE: ClassVar[str] = "replay"
    unit: str
    since_us: int

    @classmethod
    def from_dict(cls, d: dict) -> Replay:
        _check_type(d, cls.TYPE)
        return cls(unit=_unit(d), since_us=_int(d, "since_us"))


@dataclass(frozen=True)
class Config(Message):
    """The clinic's audio settings for one unit (retained): the unit applies them from its
    next session, and keeps them so they hold while it is offline. `audio` is checked by
    `scribelink.codec.CodecSettings`."""

    TYPE: ClassVar[str] = "config"
    unit: str
    audio: dict
    issued_us: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        _check_type(d, cls.TYPE)
        audio = _dict(d, "audio")
        assert audio is not None
        _str(audio, "codec", max_len=32)
        _int(audio, "bitrate", hi=512_000)
        return cls(unit=_unit(d), audio=audio, issued_us=_int(d, "issued_us", default=0))


CONTROL_MESSAGES: dict[str, type] = {
    "assignment": Assignment, "session_control": SessionControl, "cue_ack": CueAck,
    "replay": Replay, "config": Config,
}


def control_message(d: dict) -> Assignment | SessionControl | CueAck | Replay | Config:
    cls = CONTROL_MESSAGES.get(d.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise MessageError(f"unknown control message type {d.get('type')!r}")
    return cls.from_dict(d)


# ---------------------------------------------------------------------------- status (retained)


@dataclass(frozen=True)
class Status(Message):
    """Retained unit health, coarse on purpose: what the relay and clinic IT need to see
    that a room works. Never audio, keys, patient words, speech presence or mic levels
    (who talks when is the encounter's business): `mics` says only which channels are
    dead or clipping."""

    TYPE: ClassVar[str] = "status"
    unit: str
    online: bool = True
    at_us: int = 0
    link: str = "up"  # up | down | lost (last will) | stopped
    session: str | None = None
    capture: str = "idle"  # idle | live | paused | fault
    capture_error: str | None = None
    capture_overruns: int = 0
    spool: dict = field(default_factory=dict)  # records, bytes, seconds, oldest_unsent_age_s
    inflight: int = 0
    catching_up: bool = False
    mics: dict = field(default_factory=dict)  # dead [..], clipping [..]
    last_error: str | None = None
    last_gap: dict | None = None
    alarms: tuple[str, ...] = ()
    puck: dict | None = None  # connected, led
    version: str | None = None  # the software release the unit runs
    update: dict | None = None  # update state: phase, gate, trial, health (docs/updates.md)
    consent: str | None = None
    audio: dict = field(default_factory=dict)  # codec, bitrate

    @classmethod
    def from_dict(cls, d: dict) -> Status:
        _check_type(d, cls.TYPE)
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["unit"] = _unit(d)
        kw["alarms"] = tuple(a for a in (d.get("alarms") or []) if isinstance(a, str))[:32]
        return cls(**kw)

    @classmethod
    def offline_will(cls, unit: str) -> Status:
        """The last-will: the broker publishes it (retained) when the unit vanishes."""
        return cls(unit=unit, online=False, link="lost")
