"""The scribe WebSocket's own frames (docs/protocol.md section 8): the one owner on the
Python side, as cloud_relay/console/js/wsproto.js is in the browser; both are held to
tests/vectors/scribe_ws.json.

A scribe's client sends `hello` first; the relay answers `welcome`, or `error` and closes
with one of the close codes below; then it sends the room's stream items (the session
messages of scribelink.messages, each with its `cursor`), `unit_status` frames and binary
envelope frames. The scribe's `cue_ack` is scribelink.messages.CueAck.

A binary frame is one envelope after its cursor (`cursor u64 BE | envelope`), or, for a
client whose hello asked for `batch`, a run of them in one WebSocket message:
`0xFF | (length u32 BE | cursor u64 BE | envelope)*`. A cursor's first byte is never 0xFF
(stream ids are positive 63-bit integers), so the two cannot be confused. Batches cut the
relay's cost per chunk: one WebSocket message and one socket write for every chunk of the
scribe's rooms that one store commit brought, instead of one each (docs/scaling.md).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

# the relay's close codes after an `error` frame (or a hello it cannot read)
CLOSE_BAD_HELLO = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403

CURSOR_BYTES = 8
BATCH = 0xFF  # a binary message's first byte when it carries several frames
BATCH_MAX_BYTES = 256 << 10  # the relay starts a new message past this
MAX_CURSOR = 2**53 - 1  # what a browser's numbers hold exactly (the console's limit too)
_CURSOR = struct.Struct(">Q")
_LEN = struct.Struct(">I")


class FrameError(ValueError):
    """A frame that is not one of this protocol's, or is missing what it must carry."""


def _str(d: dict, k: str) -> str:
    v = d.get(k)
    if not isinstance(v, str) or not v:
        raise FrameError(f"{d.get('type')}: {k} must be non-empty text")
    return v


def _count(d: dict, k: str) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise FrameError(f"{d.get('type')}: {k} must be a non-negative integer")
    return v


def _ids(d: dict, k: str) -> tuple[str, ...]:
    v = d.get(k)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise FrameError(f"{d.get('type')}: {k} must be a list of ids")
    return tuple(v)


def _optional_ids(d: dict, k: str) -> tuple[str, ...] | None:
    return None if d.get(k) is None else _ids(d, k)


def _check_type(d: Any, t: str) -> None:
    if not isinstance(d, dict) or d.get("type") != t:
        raise FrameError(f"not a {t} frame")


@dataclass(frozen=True)
class Hello:
    """The client's first frame: its sign-in token, where to resume, and optionally which
    of its units (all of them when absent)."""

    TYPE: ClassVar[str] = "hello"
    token: str
    cursor: int = 0
    units: tuple[str, ...] | None = None
    batch: bool = False  # the client reads batched binary frames

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.TYPE, "token": self.token, "cursor": self.cursor}
        if self.units is not None:
            d["units"] = list(self.units)
        if self.batch:
            d["batch"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Hello:
        _check_type(d, cls.TYPE)
        batch = d.get("batch", False)
        if not isinstance(batch, bool):
            raise FrameError("hello: batch must be true or false")
        return cls(token=_str(d, "token"), cursor=_count(d, "cursor"),
                   units=_optional_ids(d, "units"), batch=batch)


@dataclass(frozen=True)
class Welcome:
    """The relay's answer to a good hello: who signed in, the units streamed, the cursor
    the stream resumes after and the stream's head now."""

    TYPE: ClassVar[str] = "welcome"
    user: str
    units: tuple[str, ...]
    cursor: int
    head: int

    def to_dict(self) -> dict:
        return {"type": self.TYPE, "user": self.user, "units": list(self.units),
                "cursor": self.cursor, "head": self.head}

    @classmethod
    def from_dict(cls, d: dict) -> Welcome:
        _check_type(d, cls.TYPE)
        return cls(user=_str(d, "user"), units=_ids(d, "units"), cursor=_count(d, "cursor"),
                   head=_count(d, "head"))


@dataclass(frozen=True)
class Error:
    """The relay refuses (then closes): `unauthorized` (4401), `forbidden` with the units
    refused (4403)."""

    TYPE: ClassVar[str] = "error"
    error: str
    units: tuple[str, ...] | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.TYPE, "error": self.error}
        if self.units is not None:
            d["units"] = list(self.units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Error:
        _check_type(d, cls.TYPE)
        return cls(error=_str(d, "error"), units=_optional_ids(d, "units"))


@dataclass(frozen=True)
class UnitStatus:
    """A unit's latest status (scribelink.messages.Status, as the unit published it)."""

    TYPE: ClassVar[str] = "unit_status"
    unit: str
    status: dict

    def to_dict(self) -> dict:
        return {"type": self.TYPE, "unit": self.unit, "status": self.status}

    @classmethod
    def from_dict(cls, d: dict) -> UnitStatus:
        _check_type(d, cls.TYPE)
        status = d.get("status")
        if not isinstance(status, dict):
            raise FrameError("unit_status: status must be an object")
        return cls(unit=_str(d, "unit"), status=status)


FRAMES: dict[str, type[Hello | Welcome | Error | UnitStatus]] = {
    c.TYPE: c for c in (Hello, Welcome, Error, UnitStatus)
}
FRAME_TYPES = tuple(FRAMES)


# ---------------------------------------------------------------------------- binary


def binary_frame(cursor: int, envelope: bytes) -> bytes:
    """One envelope as a binary frame."""
    return _CURSOR.pack(cursor) + envelope


def batch_message(frames: Sequence[bytes]) -> bytes:
    """Several binary frames (`binary_frame`s) as one message; one frame stays itself."""
    if len(frames) == 1:
        return frames[0]
    pack = _LEN.pack
    return b"".join([bytes((BATCH,)), *(pack(len(f)) + f for f in frames)])


def parse_binary(data: bytes) -> list[tuple[int, bytes]]:
    """(cursor, envelope) of every frame in a binary message, in order."""
    if not data:
        raise FrameError("empty binary frame")
    if data[0] != BATCH:
        return [_one(data)]
    out, i, n = [], 1, len(data)
    while i < n:
        if n - i < _LEN.size:
            raise FrameError("batch truncated in a frame's length")
        size = _LEN.unpack_from(data, i)[0]
        i += _LEN.size
        if size > n - i:
            raise FrameError(f"batch frame of {size} bytes runs past the message")
        out.append(_one(data[i:i + size]))
        i += size
    if not out:
        raise FrameError("batch without frames")
    return out


def _one(frame: bytes) -> tuple[int, bytes]:
    if len(frame) <= CURSOR_BYTES:
        raise FrameError(f"binary frame too short ({len(frame)} bytes)")
    cursor = _CURSOR.unpack_from(frame)[0]
    if cursor > MAX_CURSOR:
        raise FrameError("binary frame cursor out of range")
    return cursor, frame[CURSOR_BYTES:]
