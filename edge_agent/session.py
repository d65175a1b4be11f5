"""The unit's session: a fresh key per session, wrapped to the assigned scribes' endorsed
devices and the clinic's recovery key; sealed audio and events with their own sequence
numbers; and every clear thing the unit says about the session (open, recipients added,
gap, close) and every event, signed with the unit's key (docs/trust.md).

Pure: the clock is passed in; nothing here touches the disk or the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from scribelink import codec as codecs
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import trust


@dataclass(frozen=True)
class Wrapped:
    """A recipient the session key was wrapped to, or could not be (a bad key)."""

    recipient: msgs.Recipient | None
    error: str | None = None


@dataclass(frozen=True)
class Signer:
    """The unit's signing key and the authority-rooted binding of it to the unit id."""

    # an Ed25519 key, or a unit key held elsewhere (edge_agent.unitkey: a file, a PKCS#11
    # token); scribelink.trust.sign_raw signs with either
    key: Any
    binding: dict | None  # trust statement (unit_binding); None only in tests of the core

    def sign(self, domain: str, msg: dict) -> str:
        return trust.sign_message(domain, msg, self.key)


def wrap_to(session_key: bytes, unit_id: str, session_id: bytes, *, kind: str, rid: str,
            device: str, pub: X25519PublicKey) -> Wrapped:
    """Wrap the session key to one recipient. A key that cannot be wrapped to (a low-order
    point that slipped past every check) is reported, never fatal: capture goes on."""
    raw = env.public_key_raw(pub)
    try:
        trust.check_x25519(raw)
        wrapped = env.wrap_session_key(session_key, pub, unit_id, session_id)
    except (ValueError, trust.TrustError) as e:
        return Wrapped(None, f"{kind} {rid}: {e}")
    return Wrapped(msgs.Recipient(kind=kind, id=rid, key_id=env.key_id(raw),
                                  wrapped_key=msgs.b64(wrapped), device=device))


class Session:
    def __init__(
        self,
        *,
        unit_id: str,
        scribes: list[tuple[str, str, X25519PublicKey]],
        recovery: X25519PublicKey | None,
        signer: Signer,
        sample_rate: int,
        chunk_ms: int,
        started_us: int,
        room: str | None = None,
        session_id: bytes | None = None,
        session_key: bytes | None = None,
        consent: str = "not_required",
        codec: codecs.CodecSettings | None = None,
    ) -> None:
        """scribes: (scribe id, device id, X25519 key) of every endorsed device."""
        self.unit_id = unit_id
        self.session_id = session_id or env.new_session_id()
        self._key = session_key or env.new_session_key()
        self.signer = signer
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.codec = codec or codecs.CodecSettings(codec="pcm_s16le")
        self.codec.check_chunk_ms(chunk_ms)
        # one encoder for the whole session: Opus predicts each frame from the last
        self._encoder = codecs.encoder_for(self.codec, sample_rate)
        self.started_us = started_us
        self.room = room or ""
        self.consent = consent
        results = [wrap_to(self._key, unit_id, self.session_id, kind="scribe", rid=sid,
                           device=dev, pub=pub) for sid, dev, pub in scribes]
        if recovery is not None:
            results.append(wrap_to(self._key, unit_id, self.session_id, kind="recovery",
                                   rid="clinic-recovery", device="", pub=recovery))
        self.refused = [w.error for w in results if w.error]
        self.recipients = tuple(w.recipient for w in results if w.recipient is not None)
        if not self.recipients:
            raise ValueError("a session needs at least one recipient it can wrap to")
        self.devices = {r.device for r in self.recipients if r.device}
        self.next_audio_seq = 0
        self.next_event_seq = 0
        self.closed = False

    @property
    def hex(self) -> str:
        return self.session_id.hex()

    @property
    def key(self) -> bytes:
        return self._key

    def open_message(self) -> msgs.SessionOpen:
        m = msgs.SessionOpen(unit=self.unit_id, session=self.hex, started_us=self.started_us,
                             sample_rate=self.sample_rate, chunk_ms=self.chunk_ms,
                             recipients=self.recipients, room=self.room, consent=self.consent,
                             codec=self.codec.codec, binding=self.signer.binding)
        return _signed(m, self.signer)

    def add_recipients(self, scribes: list[tuple[str, str, X25519PublicKey]], at_us: int
                       ) -> tuple[msgs.RecipientsAdded | None, list[str]]:
        """Wrap this session's key to devices endorsed since it opened (a scribe signing in
        on a new browser joins the running session instead of splitting it)."""
        new = [w for w in (wrap_to(self._key, self.unit_id, self.session_id, kind="scribe",
                                   rid=sid, device=dev, pub=pub)
                           for sid, dev, pub in scribes if dev not in self.devices)]
        added = tuple(w.recipient for w in new if w.recipient is not None)
        errors = [w.error for w in new if w.error]
        if not added:
            return None, errors
        self.devices |= {r.device for r in added}
        self.recipients += added
        return _signed(msgs.RecipientsAdded(unit=self.unit_id, session=self.hex, at_us=at_us,
                                            recipients=added), self.signer), errors

    def seal_audio(self, pcm: np.ndarray, capture_us: int, *, final: bool = False
                   ) -> tuple[int, bytes]:
        """Encode and seal one chunk of mono int16 PCM. Returns (seq, envelope)."""
        if self.closed:
            raise RuntimeError("session is closed")
        samples = np.ascontiguousarray(pcm, dtype="<i2")
        body = self._encoder.encode(samples)
        seq = self.next_audio_seq
        header = env.Header(type=env.TYPE_AUDIO, session_id=self.session_id, seq=seq,
                            capture_us=capture_us, unit_id=self.unit_id,
                            codec=self._encoder.codec, channels=1,
                            sample_rate=self.sample_rate, sample_count=int(samples.shape[0]),
                            flags=env.FLAG_FINAL if final else 0)
        self.next_audio_seq += 1
        return seq, env.seal(header, body, self._key)

    def seal_event(self, kind: str, at_us: int, **fields) -> tuple[int, bytes]:
        seq = self.next_event_seq
        event = msgs.Event(kind=kind, at_us=at_us, **fields)
        body = event.unsigned()
        body["sig"] = self.signer.sign("event", {**body, "session": self.hex, "seq": seq})
        header = env.Header(type=env.TYPE_EVENT, session_id=self.session_id, seq=seq,
                            capture_us=at_us, unit_id=self.unit_id, codec=env.CODEC_NONE,
                            channels=0, sample_rate=0, sample_count=0)
        self.next_event_seq += 1
        return seq, env.seal(header, msgs.dumps(body), self._key)

    def gap_message(self, stream: str, first: int, last: int, reason: str, at_us: int
                    ) -> msgs.Gap:
        return gap_message(self.unit_id, self.hex, stream, first, last, reason, at_us,
                           self.signer)

    def close_message(self, ended_us: int, reason: str = "ended") -> msgs.SessionClose:
        self.closed = True
        return close_message(self.unit_id, self.hex, ended_us, self.next_audio_seq - 1,
                             self.next_event_seq - 1, reason, self.signer)

    def open_reply(self, sealed: str) -> dict:
        """A scribe's sealed reply to a cue in this session (signature not yet checked)."""
        return trust.open_reply(self._key, unit=self.unit_id, session_hex=self.hex,
                                sealed=sealed)

    def forget_key(self) -> None:
        """Drop the session key from memory once the session is closed."""
        self._key = b"\x00" * env.KEY_LEN


def _signed(m, signer: Signer):
    from dataclasses import replace

    return replace(m, sig=signer.sign(m.TYPE, m.unsigned()))


def gap_message(unit: str, session_hex: str, stream: str, first: int, last: int, reason: str,
                at_us: int, signer: Signer) -> msgs.Gap:
    """A declared loss, signed: also for a session this process no longer holds (a spool
    eviction of an older session's records)."""
    return _signed(msgs.Gap(unit=unit, session=session_hex, stream=stream, first_seq=first,
                            last_seq=last, reason=reason, at_us=at_us), signer)


def close_message(unit: str, session_hex: str, ended_us: int, last_audio_seq: int,
                  last_event_seq: int, reason: str, signer: Signer) -> msgs.SessionClose:
    return _signed(msgs.SessionClose(unit=unit, session=session_hex, ended_us=ended_us,
                                     last_audio_seq=last_audio_seq,
                                     last_event_seq=last_event_seq, reason=reason), signer)
