"""Signing in and out, the caller's own account (password, rooms), and accepting an
invitation. The rules -- back-off after failed attempts, tokens that end, a constant-cost
check for unknown users -- are in cloud_relay/accounts.py and cloud_relay/loginguard.py.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cloud_relay.api.deps import BearerToken, CurrentUser, ServicesDep, StoreDep, refuse
from cloud_relay.passwords import PasswordError

router = APIRouter(prefix="/api", tags=["auth"])


class LoginBody(BaseModel):
    user: str = Field(max_length=128)
    password: str = Field(max_length=1024)


class PasswordBody(BaseModel):
    old_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class InvitationBody(BaseModel):
    code: str = Field(min_length=16, max_length=64)


class AcceptBody(InvitationBody):
    password: str = Field(max_length=1024)


def client_address(request: Request) -> str:
    """The caller's address (behind a trusted reverse proxy: the one it forwarded)."""
    return request.client.host if request.client else "unknown"


@router.post("/login")
def login(body: LoginBody, request: Request, svc: ServicesDep):
    store, address = svc.store, client_address(request)
    who = body.user[:64]
    got = svc.accounts.sign_in(body.user, body.password, address)
    if got.wait_s > 0:
        wait = math.ceil(got.wait_s)
        store.audit(who, "login_throttled", None, {"address": address, "wait_s": wait})
        return JSONResponse(
            {"detail": {"error": "too_many_attempts", "retry_after_s": wait,
                        "message": f"too many failed sign-ins: try again in {wait} s"}},
            status_code=429, headers={"Retry-After": str(wait)})
    if got.disabled:
        store.audit(who, "login_refused_disabled", None, {"address": address})
        raise refuse(403, "account_disabled", "this account is disabled: ask the clinic's "
                     "Scribelink admin")
    if got.token is None or got.user is None:
        store.audit(who, "login_failed", None, {"address": address})
        raise HTTPException(401, "wrong user or password")
    user = got.user
    store.audit(user.id, "login", None, {"address": address})
    return {"token": got.token, "user": user.id, "role": user.role, "name": user.name,
            "expires_us": got.expires_us, "idle_s": svc.cfg.token_idle_s}


@router.post("/logout")
def logout(user: CurrentUser, token: BearerToken, svc: ServicesDep) -> dict:
    svc.accounts.sign_out(token)
    svc.store.audit(user.id, "logout")
    return {"ok": True}


@router.post("/token/renew")
def renew(user: CurrentUser, token: BearerToken, svc: ServicesDep) -> dict:
    """A fresh token for this sign-in (the old one ends); the sign-in's hard end stays."""
    got = svc.accounts.renew(token)
    if got is None:
        raise HTTPException(401, "sign in again (this sign-in has ended)")
    return {"token": got[0], "expires_us": got[1]}


@router.post("/me/password")
def change_password(body: PasswordBody, user: CurrentUser, token: BearerToken,
                    svc: ServicesDep) -> dict:
    """Change one's own password: every other sign-in of this user ends."""
    try:
        ok = svc.accounts.change_password(user.id, body.old_password, body.new_password,
                                          keep_token=token)
    except PasswordError as e:
        raise refuse(400, "weak_password", str(e)) from e
    if not ok:
        svc.store.audit(user.id, "password_change_refused")
        raise refuse(403, "wrong_password", "the current password is wrong")
    svc.store.audit(user.id, "password_changed", user.id, {"by": "self"})
    return {"ok": True}


@router.post("/invitation")
def invitation(body: InvitationBody, svc: ServicesDep) -> dict:
    """What an invitation or reset link is for (the link's code is its only key)."""
    inv = svc.accounts.invitation(body.code)
    if inv is None:
        raise refuse(404, "invitation_unknown", "this link has expired or was used: ask the "
                     "clinic's Scribelink admin for a new one")
    return {"user": inv["user"], "name": inv["name"], "role": inv["role"],
            "kind": inv["kind"], "expires_us": inv["expires_us"]}


@router.post("/invitation/accept")
def accept_invitation(body: AcceptBody, svc: ServicesDep) -> dict:
    try:
        user_id = svc.accounts.accept(body.code, body.password)
    except PasswordError as e:
        raise refuse(400, "weak_password", str(e)) from e
    if user_id is None:
        raise refuse(404, "invitation_unknown", "this link has expired or was used: ask the "
                     "clinic's Scribelink admin for a new one")
    svc.store.audit(user_id, "password_set", user_id, {"by": "invitation"})
    return {"user": user_id}


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
