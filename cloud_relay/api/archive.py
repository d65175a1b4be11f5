"""The scribe console's side of the relay beyond live delivery: its rooms with live state
and the encrypted session archive for replay and seeking (the page itself is mounted by
`main.py`).

The archive hands out exactly what the stream table holds: clear session metadata and
sealed envelopes. Only a scribe assigned to the unit, named as a recipient of the
session's wrapped key, gets them; nobody here can open them.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import RedirectResponse

from cloud_relay.api.deps import CurrentUser, StoreDep
from cloud_relay.store import Store, User, now_us
from scribelink import envelope as env

router = APIRouter(tags=["archive"])

MAX_ITEMS = 1000  # audio envelopes per archive page (40 s of 40 ms chunks)
STALE_STATUS_S = 10.0  # units send status on change and every 4 s; silence this long: offline


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def room_state(status: dict | None, age_s: float | None) -> dict:
    """What the console shows for a room: live, paused, catching_up, offline or idle."""
    if not status:
        return {"state": "offline", "buffered_s": 0.0, "reason": "never seen"}
    spool = status.get("spool") or {}
    buffered = float(spool.get("seconds") or 0.0)
    if not status.get("online", False) or status.get("link") in ("lost", "down"):
        return {"state": "offline", "buffered_s": buffered, "reason": status.get("link")}
    if age_s is not None and age_s > STALE_STATUS_S:
        return {"state": "offline", "buffered_s": buffered, "reason": "status stale"}
    capture = status.get("capture")
    if capture == "paused":
        return {"state": "paused", "buffered_s": buffered}
    if buffered > 2.0:
        return {"state": "catching_up", "buffered_s": buffered}
    if capture == "live":
        return {"state": "live", "buffered_s": buffered}
    return {"state": "idle", "buffered_s": buffered}


def unit_view(u: dict, open_sessions: dict[str, str]) -> dict:
    age = (now_us() - u["status_at_us"]) / 1e6 if u.get("status_at_us") else None
    return {**u, "status_age_s": age, **room_state(u.get("status"), age),
            "open_session": open_sessions.get(u["id"])}


def wrapped_for(open_msg: dict | None, user: User, added: Sequence[dict] = ()) -> bool:
    """Was this session's key wrapped for this scribe (by id or by current key), at its open
    or by a `recipients_added` since (a device of the scribe's that joined it)?"""
    if not open_msg:
        return False
    kid = env.key_id(user.public_key) if user.public_key else None
    for m in (open_msg, *added):
        for r in m.get("recipients", []):
            if r.get("kind") == "scribe" and (r.get("id") == user.id or r.get("key_id") == kid):
                return True
    return False


def _added(store: Store, session: str) -> list[dict]:
    return [m for m in store.session_meta(session) if m.get("type") == "recipients_added"]


def scribe_session(store: Store, session: str, user: User) -> tuple[dict, dict]:
    """The session row and its session_open, if this scribe may have its sealed items."""
    row = store.session_row(session)
    if row is None:
        raise HTTPException(404, "no such session in the archive (expired or never seen)")
    if user.role != "scribe" or row["unit"] not in store.units_for(user.id):
        store.audit(user.id, "archive_denied", session[:8], {"unit": row["unit"]})
        raise HTTPException(403, "this room is not assigned to you")
    open_msg = store.session_open(session)
    if not wrapped_for(open_msg, user) and not wrapped_for(open_msg, user, _added(store, session)):
        store.audit(user.id, "archive_denied", session[:8], {"reason": "not_wrapped"})
        raise HTTPException(403, "this session was not sealed for you")
    return row, open_msg  # type: ignore[return-value]


@router.get("/console", include_in_schema=False)
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/")


@router.get("/api/console/rooms")
def rooms(user: CurrentUser, store: StoreDep) -> dict:
    """The scribe's rooms with live state, and the stream head to follow live from."""
    units = store.units(store.units_for(user.id))
    open_sessions = store.open_sessions([u["id"] for u in units])
    return {"user": user.id, "role": user.role, "name": user.name, "head": store.head(),
            "server_us": now_us(), "units": [unit_view(u, open_sessions) for u in units]}


@router.get("/api/console/units/{unit_id}/sessions")
def sessions(unit_id: str, user: CurrentUser, store: StoreDep) -> list[dict]:
    """The archive of one room: sessions sealed for this scribe, newest first."""
    if unit_id not in store.units_for(user.id):
        store.audit(user.id, "archive_denied", unit_id)
        raise HTTPException(403, "this room is not assigned to you")
    out = []
    for s in reversed(store.sessions(unit_id)):
        open_msg = store.session_open(s["session"])
        if not wrapped_for(open_msg, user) and not wrapped_for(open_msg, user,
                                                               _added(store, s["session"])):
            continue
        c = store.session_counts(s["session"])
        out.append({**s, "unit": unit_id, "room": (open_msg or {}).get("room"),
                    "started_us": (open_msg or {}).get("started_us"),
                    "chunk_ms": (open_msg or {}).get("chunk_ms"),
                    "audio_chunks": c.get("audio", {}).get("count", 0),
                    "audio_max_seq": c.get("audio", {}).get("max_seq"),
                    "events": c.get("event", {}).get("count", 0)})
    return out


@router.get("/api/sessions/{session}/items")
def items(session: str, user: CurrentUser, store: StoreDep,
          from_seq: Annotated[int, Query(ge=0)] = 0,
          limit: Annotated[int, Query(ge=1, le=MAX_ITEMS)] = 500,
          events: bool = True) -> dict:
    """One page of a session from the archive: its session_open, lifecycle items and
    sealed events (unless events=false), and sealed audio from `from_seq` on, base64."""
    row, open_msg = scribe_session(store, session, user)
    audio = store.sealed(session, "audio", from_seq, limit)
    out = {
        "session": session,
        "unit": row["unit"],
        "opened_us": row["opened_us"],
        "closed_us": row["closed_us"],
        "session_open": open_msg,
        "meta": store.session_meta(session) if events else [],
        "events": [{"seq": s, "received_us": rec, "frame": _b64(p)}
                   for _id, s, p, rec in store.sealed(session, "event", 0, 100_000)]
        if events else [],
        "audio": [{"seq": s, "received_us": rec, "frame": _b64(p)} for _id, s, p, rec in audio],
        "next_seq": (audio[-1][1] + 1) if len(audio) == limit else None,
    }
    if from_seq == 0 and events:
        store.audit(user.id, "archive_opened", session[:8], {"unit": row["unit"]})
    return out
