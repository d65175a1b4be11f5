"""The scribe WebSocket's own frames (docs/protocol.md section 8): the one owner on the
Python side, as cloud_relay/console/js/wsproto.js is in the browser; both are held to
tests/vectors/scribe_ws.json.

A scribe's client sends `hello` first; the relay answers `welcome`, or `error` and closes
with one of the close codes below; then it sends the room's stream items (the session
messages of scribelink.messages, each with its `cursor`), `unit_status` frames and binary
envelope frames. The scribe's `cue_ack` is scribelink.messages.CueAck.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

# the relay's close codes after an `error` frame (or a hello it cannot read)
CLOSE_BAD_HELLO = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403


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

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.TYPE, "token": self.token, "cursor": self.cursor}
        if self.units is not None:
            d["units"] = list(self.units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Hello:
        _check_type(d, cls.TYPE)
        return cls(token=_str(d, "token"), cursor=_count(d, "cursor"),
                   units=_optional_ids(d, "units"))


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
