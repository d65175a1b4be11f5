"""Clinic admin: units, users, session control, audit, health (assignments, devices and
revocations are signed by the clinic authority: cloud_relay/api/trust.py)."""

from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from cloud_relay.api.archive import unit_view
from cloud_relay.api.deps import AdminUser, ServicesDep, StoreDep
from cloud_relay.store import now_us
from scribelink import messages as msgs
from scribelink import topics

router = APIRouter(prefix="/api/admin", tags=["admin"])


class UserBody(BaseModel):
    id: str = Field(max_length=64)
    name: str = Field(max_length=128)
    role: str
    password: str = Field(min_length=8, max_length=1024)


class UnitBody(BaseModel):
    id: str = Field(max_length=64)
    room: str | None = Field(default=None, max_length=128)



@router.get("/units")
def admin_units(user: AdminUser, store: StoreDep) -> list[dict]:
    return store.units()


@router.post("/units")
def admin_add_unit(body: UnitBody, user: AdminUser, store: StoreDep) -> dict:
    if not topics.valid_unit_id(body.id):
        raise HTTPException(400, "unit id: letters, digits, '.', '_', '-' only")
    store.ensure_unit(body.id, body.room)
    store.audit(user.id, "unit_saved", body.id, {"room": body.room})
    return {"ok": True}


@router.post("/users")
def admin_add_user(body: UserBody, user: AdminUser, store: StoreDep) -> dict:
    if body.role not in ("scribe", "admin", "tech"):
        raise HTTPException(400, "role must be scribe, admin or tech")
    store.add_user(body.id, body.name, body.role, body.password)
    store.audit(user.id, "user_saved", body.id, {"role": body.role})
    return {"ok": True}


@router.get("/users")
def admin_users(user: AdminUser, store: StoreDep) -> list[dict]:
    devices: dict[str, list[dict]] = {}
    for d in store.trust.devices():
        devices.setdefault(d["user"], []).append(d)
    return [{"id": u.id, "name": u.name, "role": u.role,
             "devices": len(devices.get(u.id, [])),
             "endorsed_devices": sum(1 for d in devices.get(u.id, []) if d["endorsement"]),
             # kept for older consoles: "has an endorsed device"
             "has_key": any(d["endorsement"] for d in devices.get(u.id, []))}
            for u in store.users()]


@router.post("/units/{unit_id}/session")
def admin_session(unit_id: str, action: str, user: AdminUser, svc: ServicesDep) -> dict:
    if svc.uplink is None:
        raise HTTPException(503, "no broker connection")
    try:
        msg = msgs.SessionControl(unit=unit_id, action=action)
        msgs.SessionControl.from_dict(msg.to_dict())
    except msgs.MessageError as e:
        raise HTTPException(400, str(e)) from e
    svc.uplink.publish_control(unit_id, msg.to_dict())
    svc.store.audit(user.id, f"session_{action}", unit_id)
    return {"ok": True}


@router.get("/audit")
def admin_audit(user: AdminUser, store: StoreDep, limit: int = 200) -> list[dict]:
    return store.audit_log(min(limit, 2000))


@router.get("/health")
def health(user: AdminUser, svc: ServicesDep) -> dict:
    """Unit health and archive stats for clinic IT."""
    store, cfg = svc.store, svc.cfg
    units = store.units()
    open_sessions = store.open_sessions([u["id"] for u in units])
    return {"units": [unit_view(u, open_sessions) for u in units],
            "broker": bool(svc.uplink and svc.uplink.connected),
            "archive": {**store.archive_stats(), "retention_days": cfg.retention_days,
                        "purge_interval_s": cfg.purge_interval_s},
            "relay": {"client_id": cfg.broker_client_id, "store": store.dialect,
                      "hub": svc.hub.stats(), "writer_failing": svc.writer.failing},
            "server_us": now_us(),
            "server_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
