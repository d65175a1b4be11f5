"""The relay's HTTP and WebSocket API (FastAPI).

WebSocket delivery (docs/protocol.md, "Scribe WebSocket"): after a hello with a token
and a resume cursor, the relay sends the scribe's assigned units' stream in stream
order: JSON items as text frames with their `cursor`, sealed envelopes as binary frames
prefixed by their 8-byte cursor. It never sees what the envelopes hold.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cloud_relay.auth import admin_dependency, current_user_dependency
from cloud_relay.bridge import Bridge
from cloud_relay.config import RelayConfig
from cloud_relay.store import Store, User, now_us
from scribelink import messages as msgs
from scribelink import topics

log = logging.getLogger("cloud_relay")

WS_BATCH = 500


class Hub:
    """Wakes WebSocket senders when the stream grows (called from the MQTT thread)."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.waiters: set[asyncio.Event] = set()
        self.status_queues: set[asyncio.Queue] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def _wake_all(self) -> None:
        for ev in list(self.waiters):
            ev.set()

    def poke(self) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake_all)

    def status(self, unit_id: str, status: dict) -> None:
        if self.loop is None:
            return
        for q in list(self.status_queues):
            self.loop.call_soon_threadsafe(q.put_nowait, (unit_id, status))
        self.poke()


class LoginBody(BaseModel):
    user: str = Field(max_length=128)
    password: str = Field(max_length=1024)


class KeyBody(BaseModel):
    public_key: str = Field(max_length=128)


class UserBody(BaseModel):
    id: str = Field(max_length=64)
    name: str = Field(max_length=128)
    role: str
    password: str = Field(min_length=8, max_length=1024)


class UnitBody(BaseModel):
    id: str = Field(max_length=64)
    room: str | None = Field(default=None, max_length=128)


class AssignBody(BaseModel):
    unit: str = Field(max_length=64)
    scribes: list[str]


def create_app(cfg: RelayConfig, *, start_bridge: bool = True) -> FastAPI:
    store = Store(Path(cfg.data_dir) / "relay.db")
    hub = Hub()
    store.listeners.append(hub.poke)
    bridge: Bridge | None = None
    if start_bridge:
        host, port = cfg.broker_host_port
        bridge = Bridge(store, host=host, port=port, ca_file=cfg.broker_ca_file,
                        cert_file=cfg.broker_cert_file, key_file=cfg.broker_key_file,
                        client_id=cfg.broker_client_id, on_status=hub.status)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        hub.bind(asyncio.get_running_loop())
        if bridge is not None:
            bridge.start()
        purge = asyncio.create_task(_purge_loop())
        try:
            yield
        finally:
            purge.cancel()
            if bridge is not None:
                bridge.stop()
            store.close()

    async def _purge_loop() -> None:
        while True:
            cutoff = now_us() - int(cfg.retention_days * 86400 * 1e6)
            n = store.purge_before(cutoff)
            if n:
                store.audit("relay", "archive_purged", None, {"sessions": n})
                log.info("event=archive_purged sessions=%d", n)
            await asyncio.sleep(cfg.purge_interval_s)

    app = FastAPI(title="Scribelink relay", lifespan=lifespan)
    app.state.store = store
    app.state.bridge = bridge
    app.state.hub = hub
    app.state.cfg = cfg

    current_user = current_user_dependency(store)
    admin = admin_dependency(current_user)

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True, "broker": bool(bridge and bridge.connected.is_set())}

    @app.post("/api/login")
    def login(body: LoginBody) -> dict:
        token = store.login(body.user, body.password)
        if token is None:
            store.audit(body.user, "login_failed")
            raise HTTPException(401, "wrong user or password")
        user = store.user(body.user)
        assert user is not None
        store.audit(user.id, "login")
        return {"token": token, "user": user.id, "role": user.role, "name": user.name}

    @app.get("/api/me")
    def me(user: User = Depends(current_user)) -> dict:
        return {"user": user.id, "role": user.role, "name": user.name,
                "public_key": base64.b64encode(user.public_key).decode()
                if user.public_key else None,
                "public_keys": [base64.b64encode(k).decode() for k in store.keys_for(user.id)]}

    @app.put("/api/me/key")
    def set_key(body: KeyBody, user: User = Depends(current_user)) -> dict:
        try:
            raw = base64.b64decode(body.public_key, validate=True)
            if len(raw) != 32:
                raise ValueError
        except ValueError as e:
            raise HTTPException(400, "public_key must be a base64 raw X25519 key (32 bytes)") from e
        if store.set_public_key(user.id, raw):
            store.audit(user.id, "key_registered", user.id)
            if bridge is not None:
                for unit_id in store.units_for(user.id):
                    bridge.publish_assignment(unit_id)
        return {"ok": True}

    @app.get("/api/me/units")
    def my_units(user: User = Depends(current_user)) -> list[dict]:
        allowed = set(store.units_for(user.id))
        return [u for u in store.units() if u["id"] in allowed]

    @app.get("/api/units/{unit_id}/sessions")
    def unit_sessions(unit_id: str, user: User = Depends(current_user)) -> list[dict]:
        if user.role != "admin" and unit_id not in store.units_for(user.id):
            raise HTTPException(403, "this room is not assigned to you")
        return store.sessions(unit_id)

    # ------------------------------------------------------------------ admin

    @app.get("/api/admin/units")
    def admin_units(user: User = Depends(admin)) -> list[dict]:
        return store.units()

    @app.post("/api/admin/units")
    def admin_add_unit(body: UnitBody, user: User = Depends(admin)) -> dict:
        if not topics.valid_unit_id(body.id):
            raise HTTPException(400, "unit id: letters, digits, '.', '_', '-' only")
        store.ensure_unit(body.id, body.room)
        store.audit(user.id, "unit_saved", body.id, {"room": body.room})
        return {"ok": True}

    @app.post("/api/admin/users")
    def admin_add_user(body: UserBody, user: User = Depends(admin)) -> dict:
        if body.role not in ("scribe", "admin", "tech"):
            raise HTTPException(400, "role must be scribe, admin or tech")
        store.add_user(body.id, body.name, body.role, body.password)
        store.audit(user.id, "user_saved", body.id, {"role": body.role})
        return {"ok": True}

    @app.get("/api/admin/users")
    def admin_users(user: User = Depends(admin)) -> list[dict]:
        return [{"id": u.id, "name": u.name, "role": u.role,
                 "has_key": u.public_key is not None} for u in store.users()]

    @app.put("/api/admin/assignments")
    def admin_assign(body: AssignBody, user: User = Depends(admin)) -> dict:
        if store.unit(body.unit) is None:
            raise HTTPException(404, f"unknown unit {body.unit}")
        for s in body.scribes:
            u = store.user(s)
            if u is None or u.role != "scribe":
                raise HTTPException(400, f"{s} is not a scribe")
        store.set_assignment(body.unit, body.scribes)
        store.audit(user.id, "assignment_set", body.unit, {"scribes": body.scribes})
        if bridge is not None:
            bridge.publish_assignment(body.unit)
        return {"ok": True}

    @app.post("/api/admin/units/{unit_id}/session")
    def admin_session(unit_id: str, action: str, user: User = Depends(admin)) -> dict:
        if bridge is None:
            raise HTTPException(503, "no broker connection")
        bridge.publish_control(unit_id, msgs.session_control(unit_id=unit_id, action=action))
        store.audit(user.id, f"session_{action}", unit_id)
        return {"ok": True}

    @app.get("/api/admin/audit")
    def admin_audit(limit: int = 200, user: User = Depends(admin)) -> list[dict]:
        return store.audit_log(min(limit, 2000))

    # ------------------------------------------------------------------ scribe WebSocket

    @app.websocket("/ws")
    async def ws(sock: WebSocket) -> None:
        await sock.accept()
        try:
            hello = json.loads(await asyncio.wait_for(sock.receive_text(), 10))
        except (TimeoutError, ValueError, WebSocketDisconnect):
            await sock.close(code=4400)
            return
        user = store.user_for_token(str(hello.get("token", ""))) if isinstance(hello, dict) else None
        if user is None:
            await sock.send_text(json.dumps({"type": "error", "error": "unauthorized"}))
            await sock.close(code=4401)
            return
        cursor = int(hello.get("cursor", 0) or 0)
        only = hello.get("units")
        units = store.units_for(user.id)
        if only is not None:
            denied = [u for u in only if u not in units]
            if denied:
                store.audit(user.id, "ws_denied", ",".join(denied))
                await sock.send_text(json.dumps({"type": "error", "error": "forbidden",
                                                 "units": denied}))
                await sock.close(code=4403)
                return
            units = list(only)
        await sock.send_text(json.dumps({"type": "welcome", "user": user.id, "units": units,
                                         "cursor": cursor, "head": store.max_id()}))
        store.audit(user.id, "ws_connected", None, {"cursor": cursor})
        statusq: asyncio.Queue = asyncio.Queue()
        hub.status_queues.add(statusq)
        grew = asyncio.Event()
        hub.waiters.add(grew)
        reader = asyncio.create_task(_ws_reader(sock, user))
        try:
            while not reader.done():
                allowed = store.units_for(user.id) if only is None else [
                    u for u in only if u in store.units_for(user.id)]
                grew.clear()  # before the query: a row stored after it wakes us at once
                rows = store.rows_after(cursor, allowed, WS_BATCH)
                for row in rows:
                    if row.kind in ("audio", "event"):
                        await sock.send_bytes(struct.pack(">Q", row.id) + row.payload)
                    else:
                        item = json.loads(row.payload)
                        item["cursor"] = row.id
                        await sock.send_text(json.dumps(item))
                    cursor = row.id
                while not statusq.empty():
                    unit_id, st = statusq.get_nowait()
                    if unit_id in allowed:
                        await sock.send_text(json.dumps({"type": "unit_status", "unit": unit_id,
                                                         "status": st}))
                if len(rows) == WS_BATCH:
                    continue
                try:
                    await asyncio.wait_for(grew.wait(), 0.5)
                except TimeoutError:
                    pass
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            hub.status_queues.discard(statusq)
            hub.waiters.discard(grew)
            reader.cancel()

    async def _ws_reader(sock: WebSocket, user: User) -> None:
        while True:
            try:
                text = await sock.receive_text()
            except (WebSocketDisconnect, RuntimeError):
                return
            try:
                m = json.loads(text)
            except ValueError:
                continue
            if not isinstance(m, dict):
                continue
            if m.get("type") == "cue_ack":
                unit_id = str(m.get("unit", ""))
                if unit_id not in store.units_for(user.id):
                    store.audit(user.id, "cue_ack_denied", unit_id)
                    continue
                try:
                    ack = msgs.cue_ack(unit_id=unit_id, session_hex=str(m["session"]),
                                       cue_id=int(m["cue_id"]),
                                       event_seq=int(m.get("event_seq", -1)),
                                       scribe=user.id, at_us=now_us())
                except (KeyError, ValueError, TypeError):
                    continue
                if bridge is not None:
                    bridge.publish_control(unit_id, ack)
                store.audit(user.id, "cue_ack", unit_id, {"cue_id": ack["cue_id"]})

    @app.exception_handler(msgs.MessageError)
    async def _bad_message(request, exc):  # pragma: no cover - defensive
        return JSONResponse({"detail": str(exc)}, status_code=400)

    from cloud_relay import console_api  # the scribe console: page, rooms, archive
    console_api.mount(app, store, cfg, bridge, hub)
    from cloud_relay.enroll import make_router  # unit enrollment: codes, CSR signing
    app.include_router(make_router(store, cfg, bridge))
    from cloud_relay import unit_audio  # per-unit codec and bitrate (the `config` message)
    app.include_router(unit_audio.make_router(store, bridge))
    from cloud_relay import updates  # fleet updates, diagnostics; unit routes: app.state.unit_app
    updates.mount(app, store, cfg, bridge)
    return app
