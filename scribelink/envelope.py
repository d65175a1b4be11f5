"""The sealed-chunk envelope and the session-key wrapping: the one owner of both.

Spec: docs/protocol.md, sections "Sealed envelope" and "Session open". Test vectors:
tests/vectors/. The relay only ever parses `Header`; opening a body takes the session
key, which only the assigned scribe and the clinic's recovery key can unwrap.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"SL"
VERSION = 1

# envelope types: each has its own sequence space and its own nonce prefix
TYPE_AUDIO = 1
TYPE_EVENT = 2
TYPE_NAMES = {TYPE_AUDIO: "audio", TYPE_EVENT: "event"}

# codecs
CODEC_NONE = 0  # event bodies: UTF-8 JSON
CODEC_PCM_S16LE = 1
CODEC_OPUS = 2  # body layout: scribelink/codec.py
CODEC_NAMES = {CODEC_NONE: "none", CODEC_PCM_S16LE: "pcm_s16le", CODEC_OPUS: "opus"}
CODEC_IDS = {name: cid for cid, name in CODEC_NAMES.items()}

FLAG_FINAL = 0x0001  # last chunk of the session's audio

_FIXED = struct.Struct(">2sBBBBH16sQQIIB")  # see Header
FIXED_LEN = _FIXED.size  # 49
MAX_UNIT_ID_LEN = 64
TAG_LEN = 16
KEY_LEN = 32
SESSION_ID_LEN = 16
MAX_BODY_LEN = 1 << 20  # 1 MiB: 200 ms of 16 kHz mono is 6.4 kB; anything near this is hostile

HPKE_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
HPKE_ENC_LEN = 32
SUITE_NAME = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"


class EnvelopeError(ValueError):
    """A frame that is not a well-formed envelope (bad magic, version, length, field)."""


class OpenError(ValueError):
    """A well-formed envelope whose body does not authenticate under the session key."""


class Header(NamedTuple):
    """The clear header. Every byte of it is authenticated as GCM associated data. A named
    tuple, not a frozen dataclass: the relay builds one per chunk it routes, and a tuple is
    built in a fifth of the time."""

    type: int
    session_id: bytes
    seq: int
    capture_us: int
    unit_id: str
    codec: int = CODEC_PCM_S16LE
    channels: int = 1
    sample_rate: int = 16000
    sample_count: int = 0
    flags: int = 0
    version: int = VERSION

    def pack(self) -> bytes:
        unit = self.unit_id.encode("ascii")
        if not 0 < len(unit) <= MAX_UNIT_ID_LEN:
            raise EnvelopeError(f"unit id must be 1..{MAX_UNIT_ID_LEN} ASCII bytes")
        if len(self.session_id) != SESSION_ID_LEN:
            raise EnvelopeError("session id must be 16 bytes")
        return (
            _FIXED.pack(
                MAGIC,
                self.version,
                self.type,
                self.codec,
                self.channels,
                self.flags,
                self.session_id,
                self.seq,
                self.capture_us,
                self.sample_rate,
                self.sample_count,
                len(unit),
            )
            + unit
        )

    @property
    def session_hex(self) -> str:
        return self.session_id.hex()

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))

    def nonce(self) -> bytes:
        return nonce_for(self.type, self.seq)


def nonce_for(envelope_type: int, seq: int) -> bytes:
    """96-bit GCM nonce: type (32 bits) || sequence number (64 bits). Unique per session key."""
    return struct.pack(">IQ", envelope_type, seq)


def parse_header(frame: bytes) -> tuple[Header, int]:
    """Parse the clear header; returns it and the offset where the ciphertext starts."""
    if len(frame) < FIXED_LEN:
        raise EnvelopeError(f"frame too short ({len(frame)} bytes)")
    (magic, version, typ, codec, channels, flags, sid, seq, cap, rate, count, ulen) = (
        _FIXED.unpack_from(frame)
    )
    if magic != MAGIC:
        raise EnvelopeError("bad magic: not a Scribelink envelope")
    if version != VERSION:
        raise EnvelopeError(f"unsupported envelope version {version}")
    if typ not in TYPE_NAMES:
        raise EnvelopeError(f"unknown envelope type {typ}")
    if codec not in CODEC_NAMES:
        raise EnvelopeError(f"unknown codec {codec}")
    if not 0 < ulen <= MAX_UNIT_ID_LEN:
        raise EnvelopeError("bad unit id length")
    end = FIXED_LEN + ulen
    if len(frame) < end + TAG_LEN:
        raise EnvelopeError("frame truncated")
    if len(frame) - end > MAX_BODY_LEN + TAG_LEN:
        raise EnvelopeError("body too large")
    try:
        unit = frame[FIXED_LEN:end].decode("ascii")
    except UnicodeDecodeError as e:
        raise EnvelopeError("unit id is not ASCII") from e
    pcm = typ == TYPE_AUDIO and codec == CODEC_PCM_S16LE
    if pcm and len(frame) - end - TAG_LEN != 2 * count * max(channels, 1):
        raise EnvelopeError("sample count does not match body length")
    if typ == TYPE_AUDIO and codec == CODEC_OPUS and not (count and len(frame) - end > TAG_LEN):
        raise EnvelopeError("an Opus chunk needs samples and a body")
    if (typ == TYPE_EVENT) != (codec == CODEC_NONE):
        raise EnvelopeError(f"codec {codec} does not fit a {TYPE_NAMES[typ]} envelope")
    header = Header(typ, sid, seq, cap, unit, codec, channels, rate, count, flags, version)
    return header, end


# The fields of a clear header that change from chunk to chunk of one session (flags, seq,
# capture_us, sample_count), at their offsets in the fixed part; every other byte is the
# same for all of a session's envelopes of one type. Stores keep the constant part once
# (`header_template`) and these per chunk, and rebuild the exact bytes (`header_join`):
# the header is the AEAD's associated data, so it must come back byte for byte.
_FLAGS_AT, _SEQ_AT, _COUNT_AT = 6, 24, 44
_U16, _Q2, _U32 = struct.Struct(">H"), struct.Struct(">QQ"), struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class HeaderParts:
    template: bytes  # the clear header with flags, seq, capture_us, sample_count zeroed
    flags: int
    seq: int
    capture_us: int
    sample_count: int
    sample_rate: int
    body_at: int  # where the ciphertext starts (= len(template))


def header_split(frame: bytes) -> HeaderParts | None:
    """A frame's clear header as its constant part and the fields that vary per chunk, or
    None when the frame is too short to hold the header it claims (or is no envelope).
    Pure byte surgery, no validation: `header_join` gives back exactly these bytes."""
    if len(frame) < FIXED_LEN or frame[:2] != MAGIC:
        return None
    end = FIXED_LEN + frame[FIXED_LEN - 1]
    if len(frame) < end:
        return None
    t = bytearray(frame[:end])
    flags = _U16.unpack_from(t, _FLAGS_AT)[0]
    seq, cap = _Q2.unpack_from(t, _SEQ_AT)
    count = _U32.unpack_from(t, _COUNT_AT)[0]
    rate = _U32.unpack_from(t, _COUNT_AT - 4)[0]
    t[_FLAGS_AT:_FLAGS_AT + 2] = b"\0\0"
    t[_SEQ_AT:_SEQ_AT + 16] = bytes(16)
    t[_COUNT_AT:_COUNT_AT + 4] = bytes(4)
    return HeaderParts(bytes(t), flags, seq, cap, count, rate, end)


def header_join(template: bytes, flags: int, seq: int, capture_us: int,
                sample_count: int) -> bytes:
    """The clear header `header_split` took apart (the template with the varying fields)."""
    h = bytearray(template)
    _U16.pack_into(h, _FLAGS_AT, flags)
    _Q2.pack_into(h, _SEQ_AT, seq, capture_us)
    _U32.pack_into(h, _COUNT_AT, sample_count)
    return bytes(h)


def seal(header: Header, plaintext: bytes, session_key: bytes) -> bytes:
    """Header in clear, body AES-256-GCM under the session key with the header as AAD."""
    aad = header.pack()
    return aad + AESGCM(session_key).encrypt(header.nonce(), plaintext, aad)


def open_envelope(frame: bytes, session_key: bytes) -> tuple[Header, bytes]:
    """Parse and authenticate a frame. Raises EnvelopeError or OpenError."""
    header, off = parse_header(frame)
    try:
        body = AESGCM(session_key).decrypt(header.nonce(), frame[off:], frame[:off])
    except InvalidTag as e:
        raise OpenError(
            f"chunk {header.type_name} seq={header.seq} session={header.session_hex[:8]} "
            "failed authentication (tampered, or sealed under another key)"
        ) from e
    return header, body


# ---------------------------------------------------------------- keys and wrapping


def new_session_key() -> bytes:
    return os.urandom(KEY_LEN)


def new_session_id() -> bytes:
    return os.urandom(SESSION_ID_LEN)


def public_key_raw(key: X25519PublicKey | X25519PrivateKey) -> bytes:
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_raw: bytes) -> str:
    """Short, stable identifier of a recipient public key (first 16 hex of its SHA-256)."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


def load_public_key(b64_or_raw: str | bytes) -> X25519PublicKey:
    raw = base64.b64decode(b64_or_raw) if isinstance(b64_or_raw, str) else b64_or_raw
    if len(raw) != 32:
        raise ValueError("an X25519 public key is 32 bytes")
    return X25519PublicKey.from_public_bytes(raw)


def wrap_info(unit_id: str, session_id: bytes, recipient_key_id: str) -> bytes:
    """HPKE `info`: binds a wrapped key to its unit, session and recipient."""
    return b"scribelink/v1 session-key|" + unit_id.encode() + b"|" + session_id + b"|" + (
        recipient_key_id.encode()
    )


def wrap_session_key(
    session_key: bytes, recipient: X25519PublicKey, unit_id: str, session_id: bytes
) -> bytes:
    """HPKE base-mode single-shot seal of the session key: enc (32 bytes) || ct || tag."""
    kid = key_id(public_key_raw(recipient))
    return HPKE_SUITE.encrypt(session_key, recipient, info=wrap_info(unit_id, session_id, kid))


def unwrap_session_key(
    wrapped: bytes, private_key: X25519PrivateKey, unit_id: str, session_id: bytes
) -> bytes:
    kid = key_id(public_key_raw(private_key))
    try:
        key = HPKE_SUITE.decrypt(wrapped, private_key, info=wrap_info(unit_id, session_id, kid))
    except Exception as e:  # cryptography raises InvalidTag or ValueError here
        raise OpenError("session key does not open with this private key") from e
    if len(key) != KEY_LEN:
        raise OpenError("wrapped session key has the wrong length")
    return key


def with_flags(header: Header, flags: int) -> Header:
    return header._replace(flags=flags)
