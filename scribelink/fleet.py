"""Fleet messages: release offers and diagnostics requests (relay -> unit, on the unit's
control topic), and the unit's update reports (unit -> relay, over HTTPS with its client
certificate). docs/updates.md has the flows; docs/protocol.md section 7 the control topic.

Kept apart from scribelink/messages.py while that becomes typed dataclasses: the same
style (frozen dataclasses with to_dict/from_dict and defaults, a `check` that raises
MessageError), ready to be folded in. Nothing here is trusted for what it claims about a
release: the unit checks the release itself against the pinned key; the offer only says
where to fetch it and what the admin allowed.
"""

from __future__ import annotations

import base64
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from scribelink.messages import SCHEMA_VERSION, MessageError

RELEASE_OFFER = "release_offer"
DIAGNOSTICS_REQUEST = "diagnostics_request"
CONTROL_KINDS = (RELEASE_OFFER, DIAGNOSTICS_REQUEST)

# what a unit reports about an offer, in the order it goes through them
UPDATE_STATES = ("offered", "downloading", "verified", "waiting", "installing", "trial",
                 "applied", "rolled_back", "refused", "failed")

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PATH = re.compile(r"^/unit/v1/[A-Za-z0-9/_.-]{1,200}$")


def _text(d: dict, k: str, max_len: int = 200, *, pattern: re.Pattern | None = None) -> str:
    v = d.get(k)
    if not isinstance(v, str) or not 0 < len(v) <= max_len or (pattern and not pattern.match(v)):
        raise MessageError(f"{d.get('type', 'message')}: bad {k}")
    return v


def _opt_text(d: dict, k: str, max_len: int = 200, *, pattern: re.Pattern | None = None
              ) -> str | None:
    return None if d.get(k) is None else _text(d, k, max_len, pattern=pattern)


def _int(d: dict, k: str) -> int:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise MessageError(f"{d.get('type', 'message')}: {k} must be a non-negative integer")
    return v


@dataclass(frozen=True)
class ReleaseOffer:
    """An admin offers a release to this unit. `path` is where the unit fetches it on the
    relay's unit endpoint (HTTPS, client certificate); `permit` a downgrade permit signed
    with the release key, or None."""

    unit: str = ""
    offer_id: str = ""
    release_id: str = ""  # the release tar's sha256
    version: str = ""
    size: int = 0
    path: str = ""
    permit: dict | None = None
    issued_us: int = 0
    type: str = RELEASE_OFFER
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ReleaseOffer:
        if d.get("type") != RELEASE_OFFER:
            raise MessageError("not a release offer")
        permit = d.get("permit")
        if permit is not None and not isinstance(permit, dict):
            raise MessageError("release_offer: permit must be an object")
        return cls(unit=_text(d, "unit", 64), offer_id=_text(d, "offer_id", pattern=_ID),
                   release_id=_text(d, "release_id", pattern=_SHA256),
                   version=_text(d, "version", 32), size=_int(d, "size"),
                   path=_text(d, "path", pattern=_PATH), permit=permit,
                   issued_us=_int(d, "issued_us"))


@dataclass(frozen=True)
class DiagnosticsRequest:
    """An admin asks for a diagnostics bundle sealed to their X25519 key (`recipient`,
    base64 of the raw 32 bytes)."""

    unit: str = ""
    request_id: str = ""
    recipient: str = ""
    admin: str = ""
    path: str = ""  # where to upload the sealed bundle
    issued_us: int = 0
    type: str = DIAGNOSTICS_REQUEST
    v: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DiagnosticsRequest:
        if d.get("type") != DIAGNOSTICS_REQUEST:
            raise MessageError("not a diagnostics request")
        recipient = _text(d, "recipient", 64)
        try:
            if len(base64.b64decode(recipient, validate=True)) != 32:
                raise ValueError
        except ValueError as e:
            raise MessageError("diagnostics_request: recipient must be a base64 X25519 "
                               "public key (32 bytes)") from e
        return cls(unit=_text(d, "unit", 64), request_id=_text(d, "request_id", pattern=_ID),
                   recipient=recipient, admin=_text(d, "admin", 64),
                   path=_text(d, "path", pattern=_PATH), issued_us=_int(d, "issued_us"))


def parse_control(d: dict) -> ReleaseOffer | DiagnosticsRequest | None:
    """This module's control messages as typed objects; None for other types."""
    if d.get("type") == RELEASE_OFFER:
        return ReleaseOffer.from_dict(d)
    if d.get("type") == DIAGNOSTICS_REQUEST:
        return DiagnosticsRequest.from_dict(d)
    return None


@dataclass(frozen=True)
class UpdateReport:
    """What a unit says about an offer (POST /unit/v1/update-reports). `code` is a
    scribelink.release refusal code when state is "refused"."""

    state: str = ""
    offer_id: str | None = None
    version_from: str | None = None
    version_to: str | None = None
    code: str | None = None
    reason: str | None = None
    detail: dict = field(default_factory=dict)
    at_us: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> UpdateReport:
        if not isinstance(d, dict):
            raise MessageError("update report must be an object")
        state = d.get("state")
        if state not in UPDATE_STATES:
            raise MessageError(f"update report: unknown state {state!r}")
        detail = d.get("detail") or {}
        if not isinstance(detail, dict) or len(repr(detail)) > 4096:
            raise MessageError("update report: detail must be a small object")
        return cls(state=state, offer_id=_opt_text(d, "offer_id", pattern=_ID),
                   version_from=_opt_text(d, "version_from", 32),
                   version_to=_opt_text(d, "version_to", 32),
                   code=_opt_text(d, "code", 32),
                   reason=_opt_text(d, "reason", 1000), detail=detail,
                   at_us=_int(d, "at_us"))
