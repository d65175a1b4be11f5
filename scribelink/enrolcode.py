"""The enrolment code (docs/protocol.md, section 10.5): the one thing a field tech types or
scans to enrol a unit. The clinic authority's tool makes codes with this module (the relay
never does: docs/trust.md) and scripts/provision reads them; test vectors are in
tests/vectors/enrolment_codes.json.

Text form (also the QR's content; QR alphanumeric mode holds every character of it):

    SL:XXXXX-XXXXX-...      "SL:", then RFC 4648 base32 of the payload in groups of 5

Reading forgives what a tech may get wrong by hand: case, spaces, the dashes, a missing
"SL:", and 0/1 typed for O/I.

Payload (bytes):

    version u8 (1) | field* | crc32 u32 (big-endian, zlib) over version and fields
    field = tag u8 | length (unsigned LEB128) | value

Tags 0x01-0x7F are optional to understand: a reader skips a tag it does not know (so the
lead can add the clinic authority's fingerprint or a signed grant without breaking older
tools). Tags 0x80-0xFF are critical: a reader that does not know one refuses the code
("update scripts/provision"). Known fields are below (FIELDS).

The secret never travels to the relay. The tool sends `proof()` = HKDF-SHA256(secret,
info "scribelink enrol v1 proof"), and the relay stores only SHA-256 of that, so neither a
relay database nor a request log yields a code that could be typed again. `enrolment_id()`
(another HKDF label) names the staged enrolment on the unit without revealing either.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import re
import struct
import zlib
from dataclasses import dataclass, field

PREFIX = "SL:"
VERSION = 1
SECRET_LEN = 16  # 128 bits
MAX_PAYLOAD = 1024
# the six required fields take at least this much: anything shorter is another kind of code
MIN_PAYLOAD = 1 + 2 + SECRET_LEN + 5 * 3 + 4
GROUP = 5

# URLs are stored without their usual scheme (https:// for the relay, mqtts:// for the
# broker), which a reader puts back; any other scheme is stored as written
DEFAULT_SCHEMES = {"relay_url": "https://", "broker_url": "mqtts://"}

# tag -> (name, kind); kind "bytes", "text" or "u32"
T_SECRET = 0x01
T_RELAY_URL = 0x02
T_BROKER_URL = 0x03
T_CLINIC = 0x04
T_ROOM = 0x05
T_UNIT_ID = 0x06
T_EXPIRES_AT = 0x07  # Unix seconds, so the tool can say "valid until" before asking
T_RECOVERY_KEY = 0x08  # the clinic's raw X25519 recovery public key (32 bytes)
# the clinic authority's raw Ed25519 public key (32 bytes): the unit pins it. Critical: a
# tool that cannot check a unit's trust root must not enrol one (docs/trust.md)
T_AUTHORITY = 0x81
FIELDS = {
    T_SECRET: ("secret", "bytes"),
    T_RELAY_URL: ("relay_url", "text"),
    T_BROKER_URL: ("broker_url", "text"),
    T_CLINIC: ("clinic", "text"),
    T_ROOM: ("room", "text"),
    T_UNIT_ID: ("unit_id", "text"),
    T_EXPIRES_AT: ("expires_at", "u32"),
    T_RECOVERY_KEY: ("recovery_public_key", "bytes"),
    T_AUTHORITY: ("authority", "bytes"),
}
REQUIRED = (T_SECRET, T_RELAY_URL, T_BROKER_URL, T_CLINIC, T_ROOM, T_UNIT_ID)
CRITICAL = 0x80

PROOF_INFO = b"scribelink enrol v1 proof"
ENROLMENT_ID_INFO = b"scribelink enrol v1 enrolment id"


class EnrolCodeError(ValueError):
    """A code that cannot be used: `message` says what is wrong, `action` what to do."""

    def __init__(self, message: str, action: str) -> None:
        super().__init__(message)
        self.message, self.action = message, action


@dataclass(frozen=True)
class EnrolCode:
    secret: bytes
    relay_url: str
    broker_url: str
    clinic: str
    room: str
    unit_id: str
    expires_at: int | None = None
    recovery_public_key: bytes | None = None
    authority: bytes | None = None  # the clinic authority's public key (Ed25519, raw)
    # optional fields this version does not know, kept so a code reads back unchanged
    unknown: tuple[tuple[int, bytes], ...] = field(default=(), compare=False)

    @classmethod
    def new(cls, **fields) -> EnrolCode:
        return cls(secret=os.urandom(SECRET_LEN), **fields)

    # -- derived values --------------------------------------------------------------

    def proof(self) -> str:
        """What the tool sends to the relay instead of the secret (hex)."""
        return proof_of(self.secret)

    def enrolment_id(self) -> str:
        """Names this code's enrolment on the unit (hex, 16 characters)."""
        return _hkdf(self.secret, ENROLMENT_ID_INFO, 8).hex()

    def expires(self) -> dt.datetime | None:
        return None if self.expires_at is None else dt.datetime.fromtimestamp(
            self.expires_at, dt.UTC)

    # -- text ------------------------------------------------------------------------

    def payload(self) -> bytes:
        out = bytearray([VERSION])
        for tag, (name, kind) in sorted(FIELDS.items()):
            value = getattr(self, name)
            if value is None:
                continue
            scheme = DEFAULT_SCHEMES.get(name)
            if scheme and value.startswith(scheme):
                value = value[len(scheme):]
            raw = (value.encode() if kind == "text" else struct.pack(">I", value)
                   if kind == "u32" else bytes(value))
            out += bytes([tag]) + _leb128(len(raw)) + raw
        for tag, raw in self.unknown:
            out += bytes([tag]) + _leb128(len(raw)) + raw
        out += struct.pack(">I", zlib.crc32(bytes(out)))
        if len(out) > MAX_PAYLOAD:
            raise ValueError(f"an enrolment code holds at most {MAX_PAYLOAD} bytes")
        return bytes(out)

    def text(self) -> str:
        b32 = base64.b32encode(self.payload()).decode().rstrip("=")
        return PREFIX + "-".join(b32[i:i + GROUP] for i in range(0, len(b32), GROUP))

    def __str__(self) -> str:  # never print a secret by accident
        return f"EnrolCode(unit {self.unit_id!r}, room {self.room!r}, relay {self.relay_url})"

    __repr__ = __str__


def parse(text: str) -> EnrolCode:
    """Read a code as typed or scanned; raises EnrolCodeError saying what to do."""
    s = re.sub(r"[\s\-]", "", text).upper()
    s = s.removeprefix(PREFIX)
    not_a_code = EnrolCodeError(
        "this is not a Scribelink enrolment code",
        "copy the whole code the clinic's Scribelink admin gave you (it starts with SL:), "
        "or scan its QR")
    if not s or not re.fullmatch(r"[A-Z2-701]+", s):
        raise not_a_code
    try:
        raw = base64.b32decode(s + "=" * (-len(s) % 8), map01="I")
    except (binascii.Error, ValueError):
        raise not_a_code from None
    if not MIN_PAYLOAD <= len(raw) <= MAX_PAYLOAD:
        raise not_a_code
    body, (crc,) = raw[:-4], struct.unpack(">I", raw[-4:])
    # a typo in the last character's unused bits decodes to the same bytes: catch it too
    canonical = base64.b32encode(raw).decode().rstrip("=")
    if zlib.crc32(body) != crc or canonical != s.replace("0", "O").replace("1", "I"):
        raise EnrolCodeError("the code has a typo (its check digits do not match)",
                             "check each character against the code you were given, or "
                             "scan its QR")
    if body[0] != VERSION:
        raise EnrolCodeError(f"this code is in format {body[0]}, newer than this tool knows",
                             "update scripts/provision (git pull; make setup)")
    values: dict = {}
    unknown: list[tuple[int, bytes]] = []
    i = 1
    try:
        while i < len(body):
            tag = body[i]
            length, i = _read_leb128(body, i + 1)
            value, i = body[i:i + length], i + length
            if len(value) != length:
                raise ValueError("truncated field")
            if tag in FIELDS:
                name, kind = FIELDS[tag]
                if name in values:
                    raise ValueError(f"field {name} twice")
                values[name] = (value.decode("utf-8") if kind == "text" else
                                struct.unpack(">I", value)[0] if kind == "u32" else value)
            elif tag & CRITICAL:
                raise EnrolCodeError("this code needs a newer tool (it carries a field this "
                                     "version does not understand)",
                                     "update scripts/provision (git pull; make setup)")
            else:
                unknown.append((tag, bytes(value)))
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        if isinstance(e, EnrolCodeError):
            raise
        raise EnrolCodeError(f"the code is damaged ({e})", "ask the clinic's Scribelink "
                             "admin for the code again") from None
    for name, scheme in DEFAULT_SCHEMES.items():
        if name in values and "://" not in values[name]:
            values[name] = scheme + values[name]
    missing = [FIELDS[t][0] for t in REQUIRED if FIELDS[t][0] not in values]
    if missing:
        raise EnrolCodeError(f"the code is incomplete (no {', '.join(missing)})",
                             "ask the clinic's Scribelink admin for a new code")
    if len(values["secret"]) != SECRET_LEN:
        raise EnrolCodeError("the code is damaged (its secret has the wrong length)",
                             "ask the clinic's Scribelink admin for a new code")
    return EnrolCode(**values, unknown=tuple(unknown))


def proof_of(secret: bytes) -> str:
    """The proof for a code's secret (hex): what the tool sends the relay instead of it."""
    return _hkdf(secret, PROOF_INFO, 32).hex()


def proof_hash(proof_hex: str) -> str:
    """What the relay stores for a code: SHA-256 of its proof (hex in, hex out)."""
    return hashlib.sha256(proof_hex.lower().encode()).hexdigest()


# ---------------------------------------------------------------------- helpers


def _hkdf(secret: bytes, info: bytes, length: int) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_leb128(data: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if i >= len(data) or shift > 14:
            raise ValueError("bad field length")
        byte = data[i]
        n |= (byte & 0x7F) << shift
        i += 1
        if not byte & 0x80:
            return n, i
        shift += 7
