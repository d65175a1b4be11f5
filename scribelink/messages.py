"""JSON message schemas (docs/protocol.md): session lifecycle, sealed events, status, control.

One owner for every JSON shape that crosses the broker or the relay's WebSocket.
Builders return plain dicts; `check_*` validate what comes in and raise MessageError.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from scribelink import envelope as env

SCHEMA_VERSION = 1

# --- sealed event kinds (bodies of TYPE_EVENT envelopes) ---
EVENT_KINDS = ("cue", "privacy_pause", "privacy_resume", "session_start", "session_end")

# --- clear session-topic kinds ---
SESSION_KINDS = ("session_open", "session_close", "gap")

# --- control kinds (relay -> unit) ---
CONTROL_KINDS = ("assignment", "session_control", "cue_ack", "config", "replay")

# spool_full / spool_age: the spool evicted unsent records; capture_lost: the capture
# device failed and the session's audio for that stretch was never captured
GAP_REASONS = ("spool_full", "spool_age", "capture_lost")

MAX_JSON_BYTES = 64 * 1024


class MessageError(ValueError):
    pass


def dumps(msg: dict) -> bytes:
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


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# ------------------------------------------------------------------ session topic


def session_open(
    *,
    unit_id: str,
    session_id: bytes,
    session_key: bytes,
    recipients: list[tuple[str, str, Any]],
    started_us: int,
    sample_rate: int,
    chunk_ms: int,
    room: str | None = None,
) -> dict:
    """recipients: (kind, id, X25519PublicKey) with kind "scribe" or "recovery"."""
    wrapped = []
    for kind, rid, pub in recipients:
        raw = env.public_key_raw(pub)
        wrapped.append(
            {
                "kind": kind,
                "id": rid,
                "key_id": env.key_id(raw),
                "wrapped_key": _b64(env.wrap_session_key(session_key, pub, unit_id, session_id)),
            }
        )
    return {
        "v": SCHEMA_VERSION,
        "type": "session_open",
        "unit": unit_id,
        "room": room,
        "session": session_id.hex(),
        "started_us": started_us,
        "codec": "pcm_s16le",
        "sample_rate": sample_rate,
        "channels": 1,
        "chunk_ms": chunk_ms,
        "suite": env.SUITE_NAME,
        "recipients": wrapped,
    }


def session_close(*, unit_id: str, session_id: bytes, ended_us: int, last_audio_seq: int,
                  last_event_seq: int, reason: str = "ended") -> dict:
    return {
        "v": SCHEMA_VERSION,
        "type": "session_close",
        "unit": unit_id,
        "session": session_id.hex(),
        "ended_us": ended_us,
        "last_audio_seq": last_audio_seq,
        "last_event_seq": last_event_seq,
        "reason": reason,
    }


def gap(*, unit_id: str, session_hex: str, stream: str, first_seq: int, last_seq: int,
        reason: str, at_us: int) -> dict:
    """Declared loss: sequence numbers first..last (inclusive) of `stream` will never arrive."""
    if reason not in GAP_REASONS:
        raise MessageError(f"unknown gap reason {reason!r}")
    return {
        "v": SCHEMA_VERSION,
        "type": "gap",
        "unit": unit_id,
        "session": session_hex,
        "stream": stream,
        "first_seq": first_seq,
        "last_seq": last_seq,
        "reason": reason,
        "at_us": at_us,
    }


def check_session_message(msg: dict) -> dict:
    t = msg.get("type")
    if t not in SESSION_KINDS:
        raise MessageError(f"unknown session message type {t!r}")
    if not isinstance(msg.get("unit"), str) or not isinstance(msg.get("session"), str):
        raise MessageError(f"{t}: unit and session are required")
    try:
        if len(bytes.fromhex(msg["session"])) != env.SESSION_ID_LEN:
            raise ValueError
    except ValueError as e:
        raise MessageError(f"{t}: session must be 32 hex digits") from e
    if t == "session_open":
        rec = msg.get("recipients")
        if not isinstance(rec, list) or not rec:
            raise MessageError("session_open: recipients required")
        for r in rec:
            if not isinstance(r, dict) or not {"kind", "key_id", "wrapped_key"} <= r.keys():
                raise MessageError("session_open: malformed recipient")
        if not isinstance(msg.get("sample_rate"), int):
            raise MessageError("session_open: sample_rate required")
    if t == "gap":
        for k in ("first_seq", "last_seq"):
            if not isinstance(msg.get(k), int) or msg[k] < 0:
                raise MessageError(f"gap: {k} must be a non-negative integer")
        if msg["last_seq"] < msg["first_seq"]:
            raise MessageError("gap: last_seq < first_seq")
    return msg


def wrapped_key_for(msg: dict, key_id: str) -> bytes | None:
    for r in msg.get("recipients", []):
        if r.get("key_id") == key_id:
            return base64.b64decode(r["wrapped_key"])
    return None


# ------------------------------------------------------------------ sealed events


def event(kind: str, *, at_us: int, **fields: Any) -> dict:
    """Body of a TYPE_EVENT envelope. `at_us` is the unit's wall clock (µs since epoch).

    Fields by kind: cue {cue_id}; privacy_pause/privacy_resume {audio_seq: next audio seq};
    session_start {}; session_end {reason}. Gaps are clear session-topic messages.
    """
    if kind not in EVENT_KINDS:
        raise MessageError(f"unknown event kind {kind!r}")
    return {"v": SCHEMA_VERSION, "kind": kind, "at_us": at_us, **fields}


def check_event(body: bytes) -> dict:
    msg = loads(body, what="event")
    if msg.get("kind") not in EVENT_KINDS:
        raise MessageError(f"unknown event kind {msg.get('kind')!r}")
    if not isinstance(msg.get("at_us"), int):
        raise MessageError("event: at_us required")
    return msg


# ------------------------------------------------------------------ control (relay -> unit)


def assignment(*, unit_id: str, room: str | None, scribes: list[tuple[str, bytes]],
               issued_us: int) -> dict:
    """scribes: (scribe id, raw X25519 public key). Retained on the unit's control topic."""
    return {
        "v": SCHEMA_VERSION,
        "type": "assignment",
        "unit": unit_id,
        "room": room,
        "scribes": [{"id": sid, "public_key": _b64(raw), "key_id": env.key_id(raw)}
                    for sid, raw in scribes],
        "issued_us": issued_us,
    }


def session_control(*, unit_id: str, action: str) -> dict:
    if action not in ("open", "close"):
        raise MessageError("session_control action must be open or close")
    return {"v": SCHEMA_VERSION, "type": "session_control", "unit": unit_id, "action": action}


def cue_ack(*, unit_id: str, session_hex: str, cue_id: int, event_seq: int, scribe: str,
            at_us: int) -> dict:
    return {
        "v": SCHEMA_VERSION,
        "type": "cue_ack",
        "unit": unit_id,
        "session": session_hex,
        "cue_id": cue_id,
        "event_seq": event_seq,
        "scribe": scribe,
        "at_us": at_us,
    }


def replay(*, unit_id: str, since_us: int) -> dict:
    """The relay's broker lost state: offer again what was acked since `since_us`."""
    return {"v": SCHEMA_VERSION, "type": "replay", "unit": unit_id, "since_us": since_us}


def check_control(msg: dict) -> dict:
    t = msg.get("type")
    if t not in CONTROL_KINDS:
        raise MessageError(f"unknown control message type {t!r}")
    if t == "assignment":
        sc = msg.get("scribes")
        if not isinstance(sc, list):
            raise MessageError("assignment: scribes must be a list")
        for s in sc:
            if not isinstance(s, dict) or "public_key" not in s:
                raise MessageError("assignment: malformed scribe")
            env.load_public_key(s["public_key"])
    if t == "cue_ack" and not isinstance(msg.get("cue_id"), int):
        raise MessageError("cue_ack: cue_id required")
    if t == "replay" and not isinstance(msg.get("since_us"), int):
        raise MessageError("replay: since_us required")
    return msg


# ------------------------------------------------------------------ status (retained)


def status(*, unit_id: str, online: bool, at_us: int, **fields: Any) -> dict:
    """Retained unit health. Fields (all optional): link, session, capture ("live",
    "paused", "idle"), spool {chunks, bytes, seconds, oldest_unsent_age_s}, last_gap,
    last_error, alarms [..], dsp {level_dbfs, dead_channels, clipping_channels}, puck."""
    return {"v": SCHEMA_VERSION, "type": "status", "unit": unit_id, "online": online,
            "at_us": at_us, **fields}


def offline_will(unit_id: str) -> dict:
    """The last-will: the broker publishes it (retained) when the unit vanishes."""
    return {"v": SCHEMA_VERSION, "type": "status", "unit": unit_id, "online": False,
            "link": "lost"}
