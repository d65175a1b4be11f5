"""All of the relay's routers in one place."""

from __future__ import annotations

from fastapi import APIRouter

from cloud_relay.api import admin, archive, auth, enroll, fleet, scribe, shift, transport, trust
from cloud_relay.api.deps import ServicesDep

health_router = APIRouter(tags=["health"])


@health_router.get("/healthz")
def healthz(svc: ServicesDep) -> dict:
    return {"ok": not svc.writer.failing,
            "broker": bool(svc.uplink and svc.uplink.connected),
            "store": svc.store.dialect}


api_router = APIRouter()
for _r in (health_router, auth.router, admin.router, scribe.router, enroll.router,
           archive.router, fleet.router, trust.router, transport.router, shift.router):
    api_router.include_router(_r)
