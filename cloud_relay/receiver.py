"""The reference receiver's rules (the browser console's js/receiver.js follows the same):
check who said it, open the session key, authenticate every chunk, deduplicate on
(session, stream, seq), reorder, honour declared gaps, and say a session is complete
only when its signed close has come and every chunk up to it is accounted for.

Pure: feed it what the relay sends, it calls `on_audio` and `on_record`; the clock is
passed in. Nothing a relay sends is believed on its word (docs/trust.md): a session is
played only if its `session_open` is signed by a unit key the clinic authority bound to
that unit (and not revoked); its close, gaps, added recipients and events are checked
against that key; every number is bounded before anything is allocated. Tampered,
forged, replayed and malformed items are counted and reported, never fatal.

Concurrency: none; one caller.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scribelink import codec as codecs
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import trust

log = logging.getLogger("scribe_client")

MAX_HELD_CHUNKS = 30_000  # per session reorder buffer bound (20 min of 40 ms chunks)
# A hole the stream has waited on this long without moving (later chunks held, nothing
# filling in) is given up on and counted "missing", so an undeclared loss cannot stall
# the stream forever. A unit catching up keeps the stream moving, so it never trips this;
# declared gaps skip at once.
HOLE_TIMEOUT_S = 120.0
LATE_S = 2.0  # audio arriving this much later than the session's best is "backfilled"
MAX_PENDING_UNKNOWN = 5_000  # frames of a session whose open has not come yet
MAX_PENDING_META = 256  # signed items (close, gaps) of a session whose open has not come
MAX_UNOPENED = 256  # sessions not (yet) wrapped to this device, kept for a later join
MAX_GAPS = 10_000  # declared gap ranges per session

# what the relay adds to a unit's message on its way (the stream cursor, arrival time):
# not part of what the unit signed
TRANSPORT_FIELDS = ("cursor", "received_us")

COUNTERS = ("tampered", "forged", "replayed", "malformed", "not_for_me", "missing", "chunks",
            "events", "late")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class SessionState:
    session: str
    unit: str
    key: bytes
    unit_key: Ed25519PublicKey
    sample_rate: int
    started_us: int
    codec: str = "pcm_s16le"
    next_audio: int = 0
    next_event: int = 0
    # seq -> (header, body, arrival_us, backfilled)
    held_audio: dict[int, tuple[env.Header, bytes, int, bool]] = field(default_factory=dict)
    held_events: dict[int, tuple[env.Header, bytes]] = field(default_factory=dict)
    lost_audio: list[tuple[int, int]] = field(default_factory=list)  # declared (first, last)
    seen: set[tuple[int, int]] = field(default_factory=set)
    close: msgs.SessionClose | None = None
    samples_written: int = 0
    stalled_since: float | None = None
    best_latency_us: int | None = None
    newest_seq: int = -1  # highest audio seq received so far
    reported: bool = False  # session_complete already said
    backfill: list[int] | None = None  # [first_seq, last_seq] of the current late stretch
    decoders: dict[int, object] = field(default_factory=dict)  # codec id -> decoder

    @property
    def complete(self) -> bool:
        """Only after the signed close, and every chunk up to its last is accounted for."""
        return self.close is not None and self.next_audio > self.close.last_audio_seq

    def lost_range(self, seq: int) -> tuple[int, int] | None:
        for first, last in self.lost_audio:
            if first <= seq <= last:
                return first, last
        return None


@dataclass
class _Unopened:
    """A session this device was not (yet) a recipient of: kept so that a later
    `recipients_added` naming this device can open it from its first chunk."""

    open: msgs.SessionOpen
    unit_key: Ed25519PublicKey
    frames: list[bytes] = field(default_factory=list)


class Receiver:
    def __init__(self, private_key: X25519PrivateKey, *, authority: Ed25519PublicKey,
                 on_audio: Callable, on_record: Callable[[dict], None],
                 revocations: Callable[[], trust.Revocations] = trust.Revocations,
                 clock: Callable[[], float] = time.monotonic,
                 hole_timeout_s: float = HOLE_TIMEOUT_S) -> None:
        self.clock = clock
        self.hole_timeout_s = hole_timeout_s
        self.private_key = private_key
        self.authority = authority
        self.revocations = revocations
        self.key_id = env.key_id(env.public_key_raw(private_key))
        # (SessionState, header, pcm bytes: mono int16 LE). Audio is decoded here
        # (scribelink/codec.py), in sequence order, so on_audio gets PCM whatever the
        # session's codec; what Opus conceals over a missing chunk is not passed on
        self.on_audio = on_audio
        self.on_record = on_record  # (dict)
        self.sessions: dict[str, SessionState] = {}
        self.pending: dict[str, list[bytes]] = {}  # frames before their session's open
        self.pending_meta: dict[str, list[tuple[msgs.Message, dict]]] = {}
        self.unopened: dict[str, _Unopened] = {}
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_arrival_us = 0  # of the chunk on_audio is being called for

    # ------------------------------------------------------------------ session lifecycle

    def session_item(self, item: dict) -> None:
        # the signature covers what the unit wrote, exactly: checked on the raw item
        raw = {k: v for k, v in item.items() if k not in TRANSPORT_FIELDS}
        try:
            m = msgs.session_message(raw)
        except msgs.MessageError as e:
            self._error("malformed", str(e))
            return
        if isinstance(m, msgs.SessionOpen):
            self._open(m, raw)
            return
        s = self.sessions.get(m.session)
        if s is None:
            u = self.unopened.get(m.session)
            if u is not None and isinstance(m, msgs.RecipientsAdded):
                self._joined(u, m, raw)
            else:
                # before its open (the relay may reorder), or before this device joined
                # (a gap declared then still counts once it has): checked when it opens
                q = self.pending_meta.setdefault(m.session, [])
                if len(q) < MAX_PENDING_META and len(self.pending_meta) < MAX_UNOPENED:
                    q.append((m, raw))
            return
        self._signed_item(s, m, raw)

    def _verified(self, unit_key: Ed25519PublicKey, m: msgs.Message, raw: dict,
                  session: str) -> bool:
        try:
            trust.verify_message(m.TYPE, raw, unit_key)
        except trust.TrustError as e:
            self._error("forged", str(e), session=session)
            return False
        return True

    def _signed_item(self, s: SessionState, m, raw: dict) -> None:
        if m.unit != s.unit or not self._verified(s.unit_key, m, raw, s.session):
            return
        if isinstance(m, msgs.SessionClose):
            if s.close is not None:
                return
            s.close = m
            self.on_record({"type": "session_close", "session": m.session, "unit": m.unit,
                            "reason": m.reason, "last_audio_seq": m.last_audio_seq,
                            "last_event_seq": m.last_event_seq, "ended_us": m.ended_us,
                            "recv_us": now_us()})
            self._advance(s)
        elif isinstance(m, msgs.Gap):
            self.on_record({"type": "gap", "session": m.session, "unit": m.unit,
                            "stream": m.stream, "first_seq": m.first_seq,
                            "last_seq": m.last_seq, "reason": m.reason, "recv_us": now_us()})
            if m.stream == "audio" and len(s.lost_audio) < MAX_GAPS:
                s.lost_audio.append((m.first_seq, m.last_seq))  # a range, never a set
                self._advance(s)
        elif isinstance(m, msgs.RecipientsAdded):
            self.on_record({"type": "recipients_added", "session": m.session,
                            "devices": [r.device for r in m.recipients], "recv_us": now_us()})

    def _unit_key(self, m: msgs.SessionOpen, raw: dict) -> Ed25519PublicKey | None:
        """The unit's signing key if the authority bound it to this unit and it is not
        revoked for this session; otherwise the session is refused, loudly."""
        try:
            if m.binding is None:
                raise trust.TrustError("session_open carries no binding of the unit's key")
            bound = trust.verify_binding(self.authority, m.binding)
            if bound.unit != m.unit:
                raise trust.TrustError(f"the signing key is bound to {bound.unit}, not {m.unit}")
            if self.revocations().unit_revoked(m.unit, bound.key_id, m.started_us):
                raise trust.TrustError(f"unit {m.unit}'s key {bound.key_id} is revoked")
            trust.verify_message(m.TYPE, raw, bound.sign_key)
        except trust.TrustError as e:
            self._error("forged", f"session_open refused: {e}", session=m.session,
                        unit=m.unit)
            return None
        return bound.sign_key

    def _open(self, m: msgs.SessionOpen, raw: dict) -> None:
        if m.session in self.sessions or m.session in self.unopened:
            return
        unit_key = self._unit_key(m, raw)
        if unit_key is None:
            return
        mine = m.recipient_for(self.key_id)
        if mine is None:
            self.counters["not_for_me"] += 1
            self.on_record({"type": "error", "error": "session_not_wrapped_for_me",
                            "session": m.session, "unit": m.unit})
            if len(self.unopened) < MAX_UNOPENED:
                self.unopened[m.session] = _Unopened(m, unit_key,
                                                     self.pending.pop(m.session, []))
            return
        self._start(m, unit_key, mine.wrapped())

    def _joined(self, u: _Unopened, m: msgs.RecipientsAdded, raw: dict) -> None:
        if m.unit != u.open.unit or not self._verified(u.unit_key, m, raw, m.session):
            return
        mine = next((r for r in m.recipients if r.key_id == self.key_id), None)
        if mine is None:
            return
        del self.unopened[m.session]
        self.pending.setdefault(m.session, [])[:0] = u.frames
        self._start(u.open, u.unit_key, mine.wrapped())

    def _start(self, m: msgs.SessionOpen, unit_key: Ed25519PublicKey, wrapped: bytes) -> None:
        try:
            key = env.unwrap_session_key(wrapped, self.private_key, m.unit,
                                         bytes.fromhex(m.session))
        except env.OpenError as e:
            self._error("tampered", str(e), session=m.session)
            return
        s = SessionState(m.session, m.unit, key, unit_key, m.sample_rate, m.started_us,
                         codec=m.codec)
        self.sessions[s.session] = s
        self.on_record({"type": "session_open", "session": s.session, "unit": s.unit,
                        "room": m.room, "started_us": s.started_us,
                        "sample_rate": s.sample_rate, "consent": m.consent,
                        "devices": [r.device for r in m.recipients if r.device],
                        "recv_us": now_us()})
        for item, raw in self.pending_meta.pop(s.session, []):
            self._signed_item(s, item, raw)
        for frame in self.pending.pop(s.session, []):
            self.envelope(frame)

    # ------------------------------------------------------------------ envelopes

    def envelope(self, frame: bytes) -> None:
        try:
            header, _ = env.parse_header(frame)
        except env.EnvelopeError as e:
            self._error("malformed", str(e))
            return
        s = self.sessions.get(header.session_hex)
        if s is None:
            u = self.unopened.get(header.session_hex)
            if u is not None:
                if len(u.frames) < MAX_PENDING_UNKNOWN:
                    u.frames.append(frame)
                return
            q = self.pending.setdefault(header.session_hex, [])
            if len(q) < MAX_PENDING_UNKNOWN and len(self.pending) < MAX_UNOPENED:
                q.append(frame)
            return
        if header.unit_id != s.unit:
            self._error("forged", "a chunk naming another unit", session=s.session)
            return
        try:
            header, body = env.open_envelope(frame, s.key)
        except env.OpenError as e:
            self._error("tampered", str(e), session=s.session, seq=header.seq)
            return
        ident = (header.type, header.seq)
        next_seq = s.next_audio if header.type == env.TYPE_AUDIO else s.next_event
        held = s.held_audio if header.type == env.TYPE_AUDIO else s.held_events
        if ident in s.seen or header.seq < next_seq or header.seq in held:
            self._error("replayed", f"{header.type_name} seq={header.seq} already received",
                        session=s.session, seq=header.seq)
            return
        s.seen.add(ident)
        if header.type == env.TYPE_AUDIO:
            s.held_audio[header.seq] = (header, body, *self._arrival(s, header))
            if len(s.held_audio) > MAX_HELD_CHUNKS:
                self._skip_hole(s)  # memory bound reached: give up on the hole now
        else:
            s.held_events[header.seq] = (header, body)
        self._advance(s)

    def _arrival(self, s: SessionState, header: env.Header) -> tuple[int, bool]:
        """When an audio chunk arrived, and whether it is backfilled: overtaken by newer
        audio (the unit sends live first while it catches up), or much later than the
        session's best latency."""
        arrival = now_us()
        lat = arrival - header.capture_us
        if s.best_latency_us is None or lat < s.best_latency_us:
            s.best_latency_us = lat
        late = header.seq < s.newest_seq or lat - s.best_latency_us > LATE_S * 1e6
        s.newest_seq = max(s.newest_seq, header.seq)
        if late:
            self.counters["late"] += 1
        return arrival, late

    def _write_audio(self, s: SessionState, h: env.Header, body: bytes, arrival_us: int,
                     late: bool) -> None:
        self.last_arrival_us = arrival_us
        if late:
            s.backfill = [s.backfill[0] if s.backfill else h.seq, h.seq]
        elif s.backfill:
            self._end_backfill(s)
        try:
            dec = s.decoders.get(h.codec)
            if dec is None:
                dec = s.decoders[h.codec] = codecs.decoder_for(h.codec, h.sample_rate)
            pcm = dec.decode(body, h.sample_count, h.seq).pcm  # type: ignore[attr-defined]
        except codecs.CodecError as e:
            self._error("malformed", f"audio seq={h.seq}: {e}", session=s.session, seq=h.seq)
            return
        self.counters["chunks"] += 1
        self.on_audio(s, h, pcm.astype("<i2").tobytes())
        s.samples_written += h.sample_count

    def _end_backfill(self, s: SessionState) -> None:
        if s.backfill:
            first, last = s.backfill
            self.on_record({"type": "backfill", "session": s.session, "unit": s.unit,
                            "first_seq": first, "last_seq": last, "recv_us": now_us()})
            s.backfill = None

    def tick(self) -> None:
        """Give up on holes that have stalled a stream for too long (call periodically)."""
        for s in list(self.sessions.values()):
            if s.held_audio and s.stalled_since is not None and \
                    self.clock() - s.stalled_since > self.hole_timeout_s:
                self._skip_hole(s)
                self._advance(s)

    def _skip_hole(self, s: SessionState) -> None:
        self._error("missing", f"audio seq={s.next_audio} never arrived; skipped",
                    session=s.session, seq=s.next_audio)
        s.lost_audio.append((s.next_audio, s.next_audio))
        s.stalled_since = None

    def _advance(self, s: SessionState) -> None:
        start = s.next_audio
        while True:
            if s.next_audio in s.held_audio:
                self._write_audio(s, *s.held_audio.pop(s.next_audio))
                s.next_audio += 1
                continue
            lost = s.lost_range(s.next_audio)
            if lost is None:
                break
            # a declared gap is skipped in one step, however long it claims to be; chunks
            # held inside it (a hostile gap over real audio) are dropped, counted
            inside = [q for q in s.held_audio if lost[0] <= q <= lost[1]]
            for q in inside:
                del s.held_audio[q]
            s.next_audio = lost[1] + 1
            s.lost_audio.remove(lost)
        if s.next_audio != start or not s.held_audio:
            s.stalled_since = None
        if s.held_audio and s.stalled_since is None:
            s.stalled_since = self.clock()
        while s.next_event in s.held_events:
            h, body = s.held_events.pop(s.next_event)
            s.next_event += 1
            self._event(s, h, body)
        if s.complete and not s.reported:
            s.reported = True
            self._end_backfill(s)
            assert s.close is not None
            self.on_record({"type": "session_complete", "session": s.session,
                            "samples": s.samples_written, "reason": s.close.reason})

    def _event(self, s: SessionState, h: env.Header, body: bytes) -> None:
        try:
            raw = msgs.loads(body, what="event")
            ev = msgs.Event.from_dict(raw)
            trust.verify_message("event", {**raw, "session": s.session, "seq": h.seq},
                                 s.unit_key)
        except msgs.MessageError as e:
            self._error("malformed", str(e), session=s.session)
            return
        except trust.TrustError as e:
            self._error("forged", f"event seq={h.seq}: {e}", session=s.session)
            return
        self.counters["events"] += 1
        self.on_record({"type": "event", "session": s.session, "unit": s.unit, "seq": h.seq,
                        **{k: v for k, v in ev.unsigned().items() if k != "v"},
                        "t_s": round((ev.at_us - s.started_us) / 1e6, 3),
                        "recv_us": now_us()})

    def _error(self, kind: str, detail: str, **ctx) -> None:
        self.counters[kind] += 1
        log.warning("event=rejected kind=%s %s", kind,
                    " ".join(f"{k}={json.dumps(str(v))}" for k, v in ctx.items()))
        self.on_record({"type": "error", "error": kind, "detail": detail, **ctx,
                        "recv_us": now_us()})
