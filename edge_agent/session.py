"""The unit's session: a fresh key per session, wrapped to the scribe and the clinic's
recovery key, and sealed audio and events with their own sequence numbers.

Pure: the clock is passed in; nothing here touches the disk or the network.
"""

from __future__ import annotations

import json

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from scribelink import codec as codecs
from scribelink import envelope as env
from scribelink import messages as msgs


class Session:
    def __init__(
        self,
        *,
        unit_id: str,
        scribes: list[tuple[str, X25519PublicKey]],
        recovery: X25519PublicKey | None,
        sample_rate: int,
        chunk_ms: int,
        started_us: int,
        room: str | None = None,
        session_id: bytes | None = None,
        session_key: bytes | None = None,
        codec: codecs.CodecSettings | None = None,
    ) -> None:
        if not scribes and recovery is None:
            raise ValueError("a session needs at least one recipient")
        self.unit_id = unit_id
        self.session_id = session_id or env.new_session_id()
        self._key = session_key or env.new_session_key()
        self.sample_rate = sample_rate
        self.chunk_ms = chunk_ms
        self.codec = codec or codecs.CodecSettings(codec="pcm_s16le")
        self.codec.check_chunk_ms(chunk_ms)
        # one encoder for the whole session: Opus predicts each frame from the last
        self._encoder = codecs.encoder_for(self.codec, sample_rate)
        self.started_us = started_us
        self.room = room
        self.scribe_ids = [sid for sid, _ in scribes]
        recipients: list[tuple[str, str, X25519PublicKey]] = [
            ("scribe", sid, pub) for sid, pub in scribes
        ]
        if recovery is not None:
            recipients.append(("recovery", "clinic-recovery", recovery))
        self._recipients = recipients
        self.next_audio_seq = 0
        self.next_event_seq = 0
        self.closed = False

    @property
    def hex(self) -> str:
        return self.session_id.hex()

    def open_message(self) -> dict:
        return msgs.session_open(
            unit_id=self.unit_id,
            session_id=self.session_id,
            session_key=self._key,
            recipients=self._recipients,
            started_us=self.started_us,
            sample_rate=self.sample_rate,
            chunk_ms=self.chunk_ms,
            room=self.room,
            codec=self.codec.codec,
        )

    def seal_audio(self, pcm: np.ndarray, capture_us: int, *, final: bool = False) -> tuple[int, bytes]:
        """Encode and seal one chunk of mono int16 PCM. Returns (seq, envelope)."""
        if self.closed:
            raise RuntimeError("session is closed")
        samples = np.ascontiguousarray(pcm, dtype="<i2")
        body = self._encoder.encode(samples)
        seq = self.next_audio_seq
        header = env.Header(
            type=env.TYPE_AUDIO,
            session_id=self.session_id,
            seq=seq,
            capture_us=capture_us,
            unit_id=self.unit_id,
            codec=self._encoder.codec,
            channels=1,
            sample_rate=self.sample_rate,
            sample_count=int(samples.shape[0]),
            flags=env.FLAG_FINAL if final else 0,
        )
        self.next_audio_seq += 1
        return seq, env.seal(header, body, self._key)

    def seal_event(self, kind: str, at_us: int, **fields) -> tuple[int, bytes]:
        body = json.dumps(msgs.event(kind, at_us=at_us, **fields), separators=(",", ":"))
        seq = self.next_event_seq
        header = env.Header(
            type=env.TYPE_EVENT,
            session_id=self.session_id,
            seq=seq,
            capture_us=at_us,
            unit_id=self.unit_id,
            codec=env.CODEC_NONE,
            channels=0,
            sample_rate=0,
            sample_count=0,
        )
        self.next_event_seq += 1
        return seq, env.seal(header, body.encode(), self._key)

    def close_message(self, ended_us: int, reason: str = "ended") -> dict:
        self.closed = True
        return msgs.session_close(
            unit_id=self.unit_id,
            session_id=self.session_id,
            ended_us=ended_us,
            last_audio_seq=self.next_audio_seq - 1,
            last_event_seq=self.next_event_seq - 1,
            reason=reason,
        )

    def forget_key(self) -> None:
        """Drop the session key from memory once the session is closed."""
        self._key = b"\x00" * env.KEY_LEN
