"""What the scribe console needs across a shift, beyond live delivery and the archive's
pages (docs/console.md, "The scribe's shift"):

- key shares: one of a scribe's devices hands the session keys it holds to another of the
  scribe's devices (scribelink/keyshare.py). The relay stores what the sharing device signed
  and hands it to the device it is for; each share is HPKE-sealed to that device, so the
  relay reads none, and signed by an endorsed device of the same scribe, which the receiving
  device checks itself, so the relay forges none. It checks shape and signature only to
  refuse junk early.
- the devices of a room: the endorsements of the devices of the scribes assigned to it (and
  the signed assignment), so a console can check whose reply to a cue it is looking at.
- the archive by room and time: sessions sealed for this scribe, with the devices that hold
  their key, for the session lists, their dates and search by room and day.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from cloud_relay.api.deps import CurrentUser, ServicesDep, refuse
from cloud_relay.store import Store, User
from scribelink import keyshare, trust

router = APIRouter(tags=["shift"])

MAX_SESSIONS = 500


class SharesBody(BaseModel):
    shares: list[dict] = Field(max_length=keyshare.MAX_SHARES_PER_REQUEST)


def _scribe(user: User) -> None:
    if user.role != "scribe":
        raise refuse(403, "not_a_scribe", "only scribes hold session keys")


def _my_device(store: Store, user: User, device: str) -> dict:
    d = store.trust.device(device)
    if d is None or d["user"] != user.id:
        raise refuse(404, "unknown_device", "no such device of yours")
    return d


def _sealed_for(open_msg: dict, user: User, added: Sequence[dict] = ()) -> bool:
    """Was the session's key wrapped to this scribe, at its open or since (a device joined)?"""
    return any(r.get("kind") == "scribe" and r.get("id") == user.id
               for m in (open_msg, *added) for r in m.get("recipients") or [])


def _holders(s: dict) -> list[str]:
    """The devices a session's key was wrapped to by the unit (at its open, or added)."""
    out = [r.get("device") for r in s["session_open"].get("recipients") or []]
    for added in s["added"]:
        out += [r.get("device") for r in added.get("recipients") or []]
    return sorted({d for d in out if d})


# ---------------------------------------------------------------------------- key shares


@router.put("/api/me/key-shares")
def put_shares(body: SharesBody, user: CurrentUser, svc: ServicesDep) -> dict:
    """Store key shares made by one of the caller's endorsed devices for another of them."""
    _scribe(user)
    store = svc.store
    mine = {d["device"]: d for d in store.trust.devices(user_id=user.id, pending=False)}
    units = set(store.units_for(user.id))
    rows, refused = [], []
    for d in body.shares:
        try:
            share = keyshare.KeyShare.from_dict(d)
            sender, receiver = mine.get(share.from_device), mine.get(share.to_device)
            if sender is None or receiver is None:
                raise trust.TrustError("both devices must be yours, and endorsed")
            if share.key_id != trust.key_id(receiver["enc_key"]):
                raise trust.TrustError("the share is not sealed to that device's key")
            trust.verify_message(keyshare.DOMAIN, share.to_dict(),
                                 trust.load_ed25519(sender["sign_key"]))
            if share.unit not in units:
                raise trust.TrustError("not a session of your rooms")
            open_msg = store.session_open(share.session)
            if open_msg is None or open_msg.get("unit") != share.unit or not (
                    _sealed_for(open_msg, user) or _sealed_for(
                        open_msg, user, [m for m in store.session_meta(share.session)
                                         if m.get("type") == "recipients_added"])):
                raise trust.TrustError("no such session sealed for you")
        except trust.TrustError as e:
            refused.append({"session": str(d.get("session"))[:32], "why": str(e)})
            continue
        rows.append((share.session, share.to_device, share.from_device, share.unit,
                     json.dumps(share.to_dict())))
    stored = store.shift.put_shares(rows) if rows else 0
    if stored:
        store.audit(user.id, "key_shares_stored", None,
                    {"count": stored, "to": sorted({r[1] for r in rows}),
                     "from": sorted({r[2] for r in rows})})
    return {"stored": stored, "refused": refused}


@router.get("/api/me/key-shares")
def my_shares(device: str, user: CurrentUser, svc: ServicesDep) -> list[dict]:
    """The shares made for one of the caller's devices (in rooms assigned to the caller)."""
    _scribe(user)
    _my_device(svc.store, user, device)
    return svc.store.shift.shares_for(device, svc.store.units_for(user.id))


@router.get("/api/me/key-shares/wanted")
def wanted(device: str, user: CurrentUser, svc: ServicesDep,
           limit: Annotated[int, Query(ge=1, le=MAX_SESSIONS)] = 100) -> list[dict]:
    """Closed sessions sealed for the caller that `device` cannot open yet: the unit did not
    wrap their key to it and no share for it is stored. Their session_open comes along, so
    the sharing device can unwrap its own copy of the key."""
    _scribe(user)
    store = svc.store
    _my_device(store, user, device)
    out = []
    # (a session still open is not shared: its unit adds the new device to it, signed)
    sessions = [s for s in store.shift.sessions(store.units_for(user.id), limit=MAX_SESSIONS)
                if s["closed_us"] is not None and _sealed_for(s["session_open"], user, s["added"])
                and device not in _holders(s)]
    shared = store.shift.shared_sessions(device, [s["session"] for s in sessions])
    for s in sessions:
        if s["session"] in shared:
            continue
        out.append({"session": s["session"], "unit": s["unit"],
                    "session_open": s["session_open"], "added": s["added"]})
        if len(out) >= limit:
            break
    return out


# ---------------------------------------------------------------------------- a room's devices


@router.get("/api/console/units/{unit_id}/devices")
def room_devices(unit_id: str, user: CurrentUser, svc: ServicesDep) -> dict:
    """The room's signed assignment and the endorsements of its scribes' devices: a console
    checks them against the authority it pinned before it believes a reply to a cue."""
    store = svc.store
    if unit_id not in store.units_for(user.id):
        store.audit(user.id, "devices_denied", unit_id)
        raise refuse(403, "not_assigned", "this room is not assigned to you")
    st = store.trust.assignment(unit_id)
    scribes = list((st or {}).get("body", {}).get("scribes") or [])
    return {"unit": unit_id, "assignment": st,
            "devices": [d["endorsement"] for d in store.trust.devices(users=scribes,
                                                                       pending=False)]}


# ------------------------------------------------------------------------- sessions by room and day


@router.get("/api/console/sessions")
def sessions(user: CurrentUser, svc: ServicesDep, unit: str | None = None,
             from_us: Annotated[int, Query(ge=0)] = 0,
             to_us: Annotated[int, Query(ge=0)] = 2**62, device: str | None = None,
             limit: Annotated[int, Query(ge=1, le=MAX_SESSIONS)] = 200) -> list[dict]:
    """Sessions sealed for this scribe in their rooms (or one room) that opened in
    [from_us, to_us), newest first; with `device`, whether a key share for it is stored."""
    _scribe(user)
    store = svc.store
    units = store.units_for(user.id)
    if unit is not None:
        if unit not in units:
            store.audit(user.id, "archive_denied", unit)
            raise refuse(403, "not_assigned", "this room is not assigned to you")
        units = [unit]
    found = [s for s in store.shift.sessions(units, from_us=from_us, to_us=to_us, limit=limit)
             if _sealed_for(s["session_open"], user, s["added"])]
    shared = set()
    if device is not None:
        _my_device(store, user, device)
        shared = store.shift.shared_sessions(device, [s["session"] for s in found])
    out = []
    for s in found:
        o = s["session_open"]
        out.append({"session": s["session"], "unit": s["unit"], "room": o.get("room"),
                    "opened_us": s["opened_us"], "closed_us": s["closed_us"],
                    "started_us": o.get("started_us"), "chunk_ms": o.get("chunk_ms"),
                    "consent": o.get("consent"),
                    "audio_chunks": s.get("audio_count", 0),
                    "audio_max_seq": s.get("audio_max_seq"), "events": s.get("event_count", 0),
                    "devices": _holders(s), "shared": s["session"] in shared})
    return out
