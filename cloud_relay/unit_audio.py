"""Per-unit audio settings: the clinic's choice of codec and bitrate for each room.

A clinic admin sets them with `PUT /api/admin/units/{unit}/audio`; the relay keeps them
and tells the unit with a retained `config` control message (docs/protocol.md section 7),
again whenever the relay (re)connects to the broker. A unit with no setting here uses
its own `[codec]` (provisioned; Opus by default). Mount with
`app.include_router(make_router(store, bridge))`.
"""

# ruff: noqa: B008  (FastAPI's `= Depends(...)` idiom)

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel

from cloud_relay.auth import admin_dependency, current_user_dependency
from cloud_relay.store import Store, User, now_us
from scribelink import codec as codecs
from scribelink import messages as msgs

log = logging.getLogger("cloud_relay.unit_audio")

SCHEMA = """
CREATE TABLE IF NOT EXISTS unit_audio (
    unit_id TEXT PRIMARY KEY,
    codec TEXT NOT NULL,
    bitrate INTEGER NOT NULL,
    updated_us INTEGER NOT NULL
) WITHOUT ROWID
"""


class AudioBody(BaseModel):
    codec: str = "opus"
    bitrate: int = codecs.DEFAULT_BITRATE


class UnitAudio:
    """The stored settings (one small table beside the store's own)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store._x(SCHEMA)

    def get(self, unit_id: str) -> dict | None:
        r = self.store._x("SELECT codec, bitrate FROM unit_audio WHERE unit_id=?",
                          (unit_id,)).fetchone()
        return None if r is None else {"codec": r[0], "bitrate": r[1]}

    def set(self, unit_id: str, codec: str, bitrate: int) -> None:
        self.store._x("INSERT INTO unit_audio(unit_id,codec,bitrate,updated_us) VALUES(?,?,?,?) "
                      "ON CONFLICT(unit_id) DO UPDATE SET codec=excluded.codec, "
                      "bitrate=excluded.bitrate, updated_us=excluded.updated_us",
                      (unit_id, codec, bitrate, now_us()))

    def all(self) -> dict[str, dict]:
        rows = self.store._x("SELECT unit_id, codec, bitrate FROM unit_audio").fetchall()
        return {r[0]: {"codec": r[1], "bitrate": r[2]} for r in rows}


def publish(bridge, unit_id: str, audio: dict) -> None:
    bridge.publish_control(unit_id, msgs.config(unit_id=unit_id, codec=audio["codec"],
                                                bitrate=audio["bitrate"], issued_us=now_us()),
                           retain=True)


def make_router(store: Store, bridge) -> APIRouter:
    settings = UnitAudio(store)
    admin = admin_dependency(current_user_dependency(store))
    router = APIRouter(prefix="/api/admin/units")

    if bridge is not None:
        # a broker that lost its retained messages hears them again on every connect
        bridge.on_connected.append(
            lambda: [publish(bridge, u, a) for u, a in settings.all().items()])

    @router.get("/{unit_id}/audio")
    def get_audio(unit_id: str, user: User = Depends(admin)) -> dict:
        if store.unit(unit_id) is None:
            raise HTTPException(404, f"unknown unit {unit_id}")
        stored = settings.get(unit_id)
        return {"unit": unit_id, "set": stored is not None,
                **(stored or {"codec": "opus", "bitrate": codecs.DEFAULT_BITRATE})}

    @router.put("/{unit_id}/audio")
    def put_audio(unit_id: str, body: AudioBody, user: User = Depends(admin)) -> dict:
        if store.unit(unit_id) is None:
            raise HTTPException(404, f"unknown unit {unit_id}")
        try:
            codecs.CodecSettings(codec=body.codec, bitrate=body.bitrate)
        except ValueError as e:
            raise HTTPException(400, f"{e}; the codecs are {', '.join(codecs.CODECS)}") from e
        settings.set(unit_id, body.codec, body.bitrate)
        store.audit(user.id, "unit_audio_set", unit_id,
                    {"codec": body.codec, "bitrate": body.bitrate})
        if bridge is not None:
            publish(bridge, unit_id, {"codec": body.codec, "bitrate": body.bitrate})
        return {"ok": True, "unit": unit_id, "codec": body.codec, "bitrate": body.bitrate}

    return router
