"""Signing in and the caller's own account: token, keys, assigned rooms."""

from __future__ import annotations

import base64

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from cloud_relay.api.deps import CurrentUser, ServicesDep, StoreDep

router = APIRouter(prefix="/api", tags=["auth"])


class LoginBody(BaseModel):
    user: str = Field(max_length=128)
    password: str = Field(max_length=1024)


class KeyBody(BaseModel):
    public_key: str = Field(max_length=128)


@router.post("/login")
def login(body: LoginBody, store: StoreDep) -> dict:
    token = store.login(body.user, body.password)
    if token is None:
        store.audit(body.user, "login_failed")
        raise HTTPException(401, "wrong user or password")
    user = store.user(body.user)
    assert user is not None
    store.audit(user.id, "login")
    return {"token": token, "user": user.id, "role": user.role, "name": user.name}


@router.get("/me")
def me(user: CurrentUser, store: StoreDep) -> dict:
    return {"user": user.id, "role": user.role, "name": user.name,
            "public_key": base64.b64encode(user.public_key).decode()
            if user.public_key else None,
            "public_keys": [base64.b64encode(k).decode() for k in store.keys_for(user.id)]}


@router.put("/me/key")
def set_key(body: KeyBody, user: CurrentUser, svc: ServicesDep) -> dict:
    try:
        raw = base64.b64decode(body.public_key, validate=True)
        if len(raw) != 32:
            raise ValueError
    except ValueError as e:
        raise HTTPException(400, "public_key must be a base64 raw X25519 key (32 bytes)") from e
    if svc.store.set_public_key(user.id, raw):
        svc.store.audit(user.id, "key_registered", user.id)
        if svc.uplink is not None:
            for unit_id in svc.store.units_for(user.id):
                svc.uplink.publish_assignment(unit_id)
    return {"ok": True}


@router.get("/me/units")
def my_units(user: CurrentUser, store: StoreDep) -> list[dict]:
    return store.units(store.units_for(user.id))


@router.get("/units/{unit_id}/sessions")
def unit_sessions(unit_id: str, user: CurrentUser, store: StoreDep) -> list[dict]:
    if user.role != "admin" and unit_id not in store.units_for(user.id):
        raise HTTPException(403, "this room is not assigned to you")
    return store.sessions(unit_id)
