"""Signing in and the caller's own account: token, keys, assigned rooms."""

from __future__ import annotations


from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from cloud_relay.api.deps import CurrentUser, StoreDep

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
            "devices": [{"device": d["device"], "label": d["label"], "kind": d["kind"],
                         "endorsed": d["endorsement"] is not None}
                        for d in store.trust.devices(user_id=user.id)]}


@router.get("/me/units")
def my_units(user: CurrentUser, store: StoreDep) -> list[dict]:
    return store.units(store.units_for(user.id))


@router.get("/units/{unit_id}/sessions")
def unit_sessions(unit_id: str, user: CurrentUser, store: StoreDep) -> list[dict]:
    if user.role != "admin" and unit_id not in store.units_for(user.id):
        raise HTTPException(403, "this room is not assigned to you")
    return store.sessions(unit_id)
