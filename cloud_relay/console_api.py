"""The scribe console's side of the relay: its static page at /console and the API it
needs beyond live delivery (rooms with live state, the encrypted session archive for
replay and seeking, unit health and archive stats for clinic IT).

The archive hands out exactly what the stream table holds: clear session metadata and
sealed envelopes. Only a scribe assigned to the unit, named as a recipient of the
session's wrapped key, gets them; nobody here can open them.
"""

# ruff: noqa: B008  (FastAPI's `= Depends(...)` idiom; the dependencies close over the store)

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from cloud_relay.auth import admin_dependency, current_user_dependency
from cloud_relay.config import RelayConfig
from cloud_relay.store import Store, User, now_us
from scribelink import envelope as env

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
MAX_ITEMS = 1000  # audio envelopes per archive page (40 s of 40 ms chunks)
STALE_STATUS_S = 10.0  # units publish status every second; silence this long means offline


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


class Archive:
    """Read-only queries over the relay's sealed stream (the archive)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self.store._x(sql, args).fetchall()  # one lock, one connection: the store's

    def session_row(self, session: str) -> dict | None:
        r = self._q("SELECT session,unit_id,opened_us,closed_us FROM sessions WHERE session=?",
                    (session,))
        if not r:
            return None
        s, unit, opened, closed = r[0]
        return {"session": s, "unit": unit, "opened_us": opened, "closed_us": closed}

    def session_open(self, session: str) -> dict | None:
        r = self._q("SELECT payload FROM stream WHERE session=? AND kind='session_open'",
                    (session,))
        return json.loads(r[0][0]) if r else None

    def meta(self, session: str) -> list[dict]:
        """Clear lifecycle items of a session (close, gaps) in arrival order."""
        rows = self._q("SELECT id,kind,payload,received_us FROM stream WHERE session=? "
                       "AND kind NOT IN ('audio','event','session_open') ORDER BY id",
                       (session,))
        out = []
        for rid, _kind, payload, rec in rows:
            item = json.loads(payload)
            item["cursor"], item["received_us"] = rid, rec
            out.append(item)
        return out

    def sealed(self, session: str, kind: str, from_seq: int, limit: int) -> list[tuple]:
        return self._q("SELECT id,seq,payload,received_us FROM stream WHERE session=? AND "
                       "kind=? AND seq>=? ORDER BY seq LIMIT ?", (session, kind, from_seq, limit))

    def counts(self, session: str) -> dict:
        rows = self._q("SELECT kind, COUNT(*), MAX(seq) FROM stream WHERE session=? "
                       "GROUP BY kind", (session,))
        return {k: {"count": n, "max_seq": m} for k, n, m in rows}

    def stats(self) -> dict:
        n_sessions = self._q("SELECT COUNT(*), MIN(opened_us) FROM sessions")[0]
        n_stream = self._q("SELECT COUNT(*), COALESCE(SUM(LENGTH(payload)),0) FROM stream")[0]
        return {"sessions": n_sessions[0], "oldest_opened_us": n_sessions[1],
                "items": n_stream[0], "bytes": n_stream[1]}


def wrapped_for(open_msg: dict | None, user: User) -> bool:
    """Was this session's key wrapped for this scribe (by id or by current key)?"""
    if not open_msg:
        return False
    kid = env.key_id(user.public_key) if user.public_key else None
    for r in open_msg.get("recipients", []):
        if r.get("kind") == "scribe" and (r.get("id") == user.id or r.get("key_id") == kid):
            return True
    return False


def make_router(store: Store, cfg: RelayConfig, bridge, hub) -> APIRouter:
    archive = Archive(store)
    router = APIRouter()

    current_user = current_user_dependency(store)
    admin = admin_dependency(current_user)

    def scribe_session(session: str, user: User) -> tuple[dict, dict]:
        """The session row and its session_open, if this scribe may have its sealed items."""
        row = archive.session_row(session)
        if row is None:
            raise HTTPException(404, "no such session in the archive (expired or never seen)")
        if user.role != "scribe" or row["unit"] not in store.units_for(user.id):
            store.audit(user.id, "archive_denied", session[:8], {"unit": row["unit"]})
            raise HTTPException(403, "this room is not assigned to you")
        open_msg = archive.session_open(session)
        if not wrapped_for(open_msg, user):
            store.audit(user.id, "archive_denied", session[:8], {"reason": "not_wrapped"})
            raise HTTPException(403, "this session was not sealed for you")
        return row, open_msg  # type: ignore[return-value]

    def unit_view(u: dict) -> dict:
        age = (now_us() - u["status_at_us"]) / 1e6 if u.get("status_at_us") else None
        open_sessions = [s for s in store.sessions(u["id"]) if s["closed_us"] is None]
        return {**u, "status_age_s": age, **room_state(u.get("status"), age),
                "open_session": open_sessions[-1]["session"] if open_sessions else None}

    @router.get("/console", include_in_schema=False)
    def console_root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @router.get("/api/console/rooms")
    def rooms(user: User = Depends(current_user)) -> dict:
        """The scribe's rooms with live state, and the stream head to follow live from."""
        allowed = set(store.units_for(user.id))
        units = [unit_view(u) for u in store.units() if u["id"] in allowed]
        return {"user": user.id, "role": user.role, "name": user.name, "head": store.max_id(),
                "server_us": now_us(), "units": units}

    @router.get("/api/console/units/{unit_id}/sessions")
    def sessions(unit_id: str, user: User = Depends(current_user)) -> list[dict]:
        """The archive of one room: sessions sealed for this scribe, newest first."""
        if unit_id not in store.units_for(user.id):
            store.audit(user.id, "archive_denied", unit_id)
            raise HTTPException(403, "this room is not assigned to you")
        out = []
        for s in reversed(store.sessions(unit_id)):
            open_msg = archive.session_open(s["session"])
            if not wrapped_for(open_msg, user):
                continue
            c = archive.counts(s["session"])
            out.append({**s, "unit": unit_id, "room": (open_msg or {}).get("room"),
                        "started_us": (open_msg or {}).get("started_us"),
                        "chunk_ms": (open_msg or {}).get("chunk_ms"),
                        "audio_chunks": c.get("audio", {}).get("count", 0),
                        "audio_max_seq": c.get("audio", {}).get("max_seq"),
                        "events": c.get("event", {}).get("count", 0)})
        return out

    @router.get("/api/sessions/{session}/items")
    def items(session: str, from_seq: Annotated[int, Query(ge=0)] = 0,
              limit: Annotated[int, Query(ge=1, le=MAX_ITEMS)] = 500, events: bool = True,
              user: User = Depends(current_user)) -> dict:
        """One page of a session from the archive: its session_open, lifecycle items and
        sealed events (unless events=false), and sealed audio from `from_seq` on, base64.
        """
        row, open_msg = scribe_session(session, user)
        audio = archive.sealed(session, "audio", from_seq, limit)
        out = {
            "session": session,
            "unit": row["unit"],
            "opened_us": row["opened_us"],
            "closed_us": row["closed_us"],
            "session_open": open_msg,
            "meta": archive.meta(session) if events else [],
            "events": [{"seq": s, "received_us": rec, "frame": _b64(p)}
                       for _id, s, p, rec in archive.sealed(session, "event", 0, 100_000)]
            if events else [],
            "audio": [{"seq": s, "received_us": rec, "frame": _b64(p)}
                      for _id, s, p, rec in audio],
            "next_seq": (audio[-1][1] + 1) if len(audio) == limit else None,
        }
        if from_seq == 0 and events:
            store.audit(user.id, "archive_opened", session[:8], {"unit": row["unit"]})
        return out

    # ------------------------------------------------------------------ clinic IT

    @router.get("/api/admin/health")
    def health(user: User = Depends(admin)) -> dict:
        return {"units": [unit_view(u) for u in store.units()],
                "broker": bool(bridge and bridge.connected.is_set()),
                "archive": {**archive.stats(), "retention_days": cfg.retention_days,
                            "purge_interval_s": cfg.purge_interval_s},
                "server_us": now_us(), "server_time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime())}

    return router


# The page holds the scribe's key: it runs only its own scripts and talks only to its relay.
CONSOLE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    async def get_response(self, path, scope):
        response = await super().get_response(path, scope)
        response.headers.update(CONSOLE_HEADERS)
        return response


def mount(app: FastAPI, store: Store, cfg: RelayConfig, bridge, hub) -> None:
    """Add the console API and the static page to the relay app."""
    app.include_router(make_router(store, cfg, bridge, hub))
    app.mount("/console", ConsoleFiles(directory=CONSOLE_DIR, html=True), name="console")
