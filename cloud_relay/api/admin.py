"""The clinic admin's API (the admin view in the console uses exactly this): people,
rooms, units, the archive's retention, alerts, the audit log, settings and session
control. What only the clinic authority may decide -- device endorsements, assignments,
enrolment grants, revocations, provisioning tokens -- arrives here already signed in the
admin's browser (cloud_relay/api/trust.py stores it; `revoke_unit` below takes one too):
the relay never holds the authority's key.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import time

from cryptography import x509
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from cloud_relay import alerts as fleet_alerts
from cloud_relay import pki
from cloud_relay.accounts import ROLES
from cloud_relay.api import trust as trust_api
from cloud_relay.api.archive import unit_view
from cloud_relay.api.deps import AdminUser, ServicesDep, StoreDep, refuse
from cloud_relay.passwords import PasswordError
from cloud_relay.revocation import REVOKED, transport
from cloud_relay.store import RoomExists, Store, UserExists, now_us
from scribelink import messages as msgs
from scribelink import topics, trust

log = logging.getLogger("cloud_relay.admin")

router = APIRouter(prefix="/api/admin", tags=["admin"])

USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
RETENTION_SETTING = "retention_days"
CLINIC_SETTING = "clinic_name"


class UserBody(BaseModel):
    id: str = Field(max_length=64)
    name: str = Field(min_length=1, max_length=128)
    role: str
    # empty: the user is invited (a one-time link sets their password)
    password: str | None = Field(default=None, max_length=1024)


class NameBody(BaseModel):
    name: str = Field(min_length=1, max_length=128)


class RoleBody(BaseModel):
    role: str


class UnitBody(BaseModel):
    id: str = Field(max_length=64)
    room: str | None = Field(default=None, max_length=128)


class UnitPatch(BaseModel):
    room: str = Field(max_length=128)  # "" takes the unit out of its room


class RevokeBody(BaseModel):
    statement: dict  # the new revocation list, signed by the clinic authority


class RetentionBody(BaseModel):
    days: float = Field(gt=0, le=3650)


class PurgeBody(BaseModel):
    older_than_days: float | None = Field(default=None, ge=0, le=3650)


class SettingsBody(BaseModel):
    clinic_name: str = Field(min_length=1, max_length=128)


def _when(us: int | None) -> str:
    if not us:
        return ""
    return dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------- people


def _people(store: Store) -> list[dict]:
    revoked = trust_api.revocations(store).devices if store.trust.get(
        trust_api.AUTHORITY) else frozenset()
    devices: dict[str, list[dict]] = {}
    for d in store.trust.devices():
        devices.setdefault(d["user"], []).append({
            "device": d["device"], "label": d["label"], "kind": d["kind"],
            "created_us": d["created_us"], "endorsed": d["endorsement"] is not None,
            "endorsed_by": d["endorsed_by"], "endorsed_us": d["endorsed_us"],
            "revoked": d["device"] in revoked})
    invites = store.accounts.open_invites()
    rooms: dict[str, list[str]] = {}
    for u in store.units():
        for s in u["scribes"]:
            rooms.setdefault(s, []).append(u["id"])
    return [{**p, "devices": devices.get(p["id"], []), "units": rooms.get(p["id"], []),
             "invite": invites.get(p["id"])} for p in store.accounts.people()]


@router.get("/people")
def people(user: AdminUser, store: StoreDep) -> list[dict]:
    """Everyone with an account: role, state, devices (endorsed, pending, revoked) and the
    rooms they hear."""
    return _people(store)


@router.get("/users")
def admin_users(user: AdminUser, store: StoreDep) -> list[dict]:
    return [{"id": p["id"], "name": p["name"], "role": p["role"], "disabled": p["disabled"],
             "devices": len(p["devices"]),
             "endorsed_devices": sum(1 for d in p["devices"] if d["endorsed"] and not
                                     d["revoked"]),
             # kept for older consoles: "has an endorsed device"
             "has_key": any(d["endorsed"] and not d["revoked"] for d in p["devices"])}
            for p in _people(store)]


def _user(store: Store, user_id: str):
    u = store.user(user_id)
    if u is None:
        raise refuse(404, "unknown_user", f"no user {user_id}")
    return u


def _keep_an_admin(store: Store, user_id: str) -> None:
    if store.accounts.admins_active() == [user_id]:
        raise refuse(409, "last_admin", f"{user_id} is the only active admin: make another "
                     "admin first, or nobody could run the clinic")


@router.post("/users")
def add_user(body: UserBody, user: AdminUser, svc: ServicesDep) -> dict:
    """A new account. Without a password the answer holds a one-time invitation code
    (the link to hand over: /console/invite.html#CODE). An existing id is refused (409):
    changing a role or a password are their own actions."""
    if not USER_ID.fullmatch(body.id):
        raise refuse(400, "bad_user_id", "user id: letters, digits, '.', '_', '@', '-' "
                     "(at most 64, starting with a letter or digit)")
    if body.role not in ROLES:
        raise refuse(400, "bad_role", f"role must be one of {', '.join(ROLES)}")
    try:
        code = svc.accounts.create(body.id, body.name, body.role, by=user.id,
                                   password=body.password or None)
    except UserExists as e:
        raise refuse(409, "user_exists", f"a user {body.id} exists already: pick another id "
                     "(a role or password change is its own action)") from e
    except PasswordError as e:
        raise refuse(400, "weak_password", str(e)) from e
    svc.store.audit(user.id, "user_created", body.id,
                    {"role": body.role, "invited": code is not None})
    out = {"ok": True, "id": body.id, "role": body.role}
    if code is not None:
        out |= {"invite_code": code, "invite_path": f"/console/invite.html#{code}",
                "expires_us": now_us() + int(svc.cfg.invite_ttl_s * 1e6)}
    return out


@router.patch("/users/{user_id}")
def rename_user(user_id: str, body: NameBody, user: AdminUser, store: StoreDep) -> dict:
    old = _user(store, user_id)
    store.accounts.set_name(user_id, body.name)
    store.audit(user.id, "user_renamed", user_id, {"from": old.name, "to": body.name})
    return {"ok": True}


@router.put("/users/{user_id}/role")
def set_role(user_id: str, body: RoleBody, user: AdminUser, svc: ServicesDep) -> dict:
    """A role change, audited on its own. A scribe who stops being one keeps no rooms."""
    store = svc.store
    if body.role not in ROLES:
        raise refuse(400, "bad_role", f"role must be one of {', '.join(ROLES)}")
    old = _user(store, user_id)
    if old.role == body.role:
        return {"ok": True, "changed": False}
    if old.role == "admin":
        _keep_an_admin(store, user_id)
    if old.role == "scribe" and store.units_for(user_id):
        raise refuse(409, "still_assigned", f"{user_id} still hears "
                     f"{', '.join(store.units_for(user_id))}: assign those rooms to others "
                     "first")
    store.accounts.set_role(user_id, body.role)
    store.accounts.revoke_tokens(user_id)  # their next sign-in carries the new role
    store.audit(user.id, "user_role_changed", user_id, {"from": old.role, "to": body.role})
    return {"ok": True, "changed": True}


@router.post("/users/{user_id}/reset")
def reset_password(user_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    """The password stops working and every sign-in ends; the answer's one-time code lets
    the user choose a new one (the admin never learns it)."""
    _user(svc.store, user_id)
    code = svc.accounts.reset(user_id, by=user.id)
    svc.store.audit(user.id, "password_reset", user_id)
    return {"ok": True, "invite_code": code, "invite_path": f"/console/invite.html#{code}",
            "expires_us": now_us() + int(svc.cfg.invite_ttl_s * 1e6)}


@router.post("/users/{user_id}/invite")
def reinvite(user_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    """A new invitation link for a user who has not set a password yet."""
    store = svc.store
    _user(store, user_id)
    p = next(p for p in store.accounts.people() if p["id"] == user_id)
    if p["has_password"]:
        raise refuse(409, "has_password", f"{user_id} has a password: reset it instead")
    code = svc.accounts.reset(user_id, by=user.id)
    store.audit(user.id, "user_invited", user_id)
    return {"ok": True, "invite_code": code, "invite_path": f"/console/invite.html#{code}"}


@router.post("/users/{user_id}/disable")
def disable_user(user_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    """No more sign-ins, and every current one ends (their live stream with it). Their
    devices stay endorsed until the authority revokes them (the admin view offers it)."""
    store = svc.store
    target = _user(store, user_id)
    if user_id == user.id:
        raise refuse(409, "self", "you cannot disable your own account")
    if target.role == "admin":
        _keep_an_admin(store, user_id)
    svc.accounts.set_disabled(user_id, True)
    store.audit(user.id, "user_disabled", user_id)
    return {"ok": True}


@router.post("/users/{user_id}/enable")
def enable_user(user_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    _user(svc.store, user_id)
    svc.accounts.set_disabled(user_id, False)
    svc.store.audit(user.id, "user_enabled", user_id)
    return {"ok": True}


@router.post("/users/{user_id}/signout")
def sign_out_user(user_id: str, user: AdminUser, store: StoreDep) -> dict:
    _user(store, user_id)
    n = store.accounts.revoke_tokens(user_id)
    store.audit(user.id, "user_signed_out", user_id, {"sign_ins": n})
    return {"ok": True, "ended": n}


@router.delete("/users/{user_id}")
def remove_user(user_id: str, user: AdminUser, store: StoreDep) -> dict:
    """Remove an account. Refused while the clinic authority still lets them hear a room
    (a signed assignment names them, or a device of theirs is endorsed and not revoked):
    the relay cannot undo what the authority signed, so the admin does that first."""
    target = _user(store, user_id)
    if user_id == user.id:
        raise refuse(409, "self", "you cannot remove your own account")
    if target.role == "admin":
        _keep_an_admin(store, user_id)
    units = store.units_for(user_id)
    if units:
        raise refuse(409, "still_assigned", f"{user_id} still hears {', '.join(units)}: "
                     "sign new assignments without them first")
    live = [d["device"] for p in _people(store) if p["id"] == user_id
            for d in p["devices"] if d["endorsed"] and not d["revoked"]]
    if live:
        raise refuse(409, "devices_endorsed", f"{user_id}'s devices {', '.join(live)} are "
                     "still endorsed: revoke them first (units would keep sealing to them)",
                     devices=live)
    store.accounts.delete_user(user_id)
    store.audit(user.id, "user_removed", user_id, {"role": target.role})
    return {"ok": True}


# ---------------------------------------------------------------------------- rooms


@router.get("/rooms")
def rooms(user: AdminUser, store: StoreDep) -> list[dict]:
    return store.clinic.rooms()


@router.post("/rooms")
def add_room(body: NameBody, user: AdminUser, store: StoreDep) -> dict:
    name = body.name.strip()
    try:
        store.clinic.add_room(name)
    except RoomExists as e:
        raise refuse(409, "room_exists", f"a room {name!r} exists already") from e
    store.audit(user.id, "room_created", name)
    return {"ok": True, "name": name}


@router.patch("/rooms/{name}")
def rename_room(name: str, body: NameBody, user: AdminUser, store: StoreDep) -> dict:
    new = body.name.strip()
    try:
        found = store.clinic.rename_room(name, new)
    except RoomExists as e:
        raise refuse(409, "room_exists", f"a room {new!r} exists already") from e
    if not found:
        raise refuse(404, "unknown_room", f"no room {name!r}")
    store.audit(user.id, "room_renamed", new, {"from": name})
    return {"ok": True}


@router.delete("/rooms/{name}")
def delete_room(name: str, user: AdminUser, store: StoreDep) -> dict:
    units = store.clinic.delete_room(name)
    if units:
        raise refuse(409, "room_in_use", f"units {', '.join(units)} are in {name!r}: move "
                     "them first")
    store.audit(user.id, "room_removed", name)
    return {"ok": True}


# ---------------------------------------------------------------------------- units


def _cert_info(pem: str | None) -> dict:
    if not pem:
        return {}
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return {}
    return {"cert_not_after_us": int(cert.not_valid_after_utc.timestamp() * 1e6),
            "cert_serial": format(cert.serial_number, "x")}


def fleet_units(svc) -> list[dict]:
    """Every unit as the admin sees it: health, room, scribes, software version, its
    enrolment and certificate, revocation, open enrolment codes, bound signing keys."""
    store = svc.store
    units = store.units()
    open_sessions = store.open_sessions([u["id"] for u in units])
    enrolments = store.clinic.enrolments()
    codes = store.clinic.open_codes()
    revoked = store.clinic.revocations()
    out = []
    for u in units:
        v = unit_view(u, open_sessions)
        e = enrolments.get(u["id"], {})
        r = revoked.get(u["id"], {})
        # revoked until it is enrolled again after the revocation (re-enrolled with a new
        # code the authority granted)
        still_revoked = bool(r) and not (e.get("enrolled_us") or 0) > r["revoked_us"]
        out.append({**v, "version": (u.get("status") or {}).get("version"),
                    "enrolled_us": e.get("enrolled_us"), "enrolled_by": e.get("enrolled_by"),
                    "cert_fingerprint": e.get("cert_fingerprint"), **_cert_info(e.get("cert_pem")),
                    "revoked_us": r.get("revoked_us") if still_revoked else None,
                    "revoked_by": r.get("revoked_by") if still_revoked else None,
                    "codes": codes.get(u["id"], []),
                    "bindings": [b["key_id"] for b in store.trust.bindings(u["id"])]})
    return out


@router.get("/units")
def admin_units(user: AdminUser, store: StoreDep) -> list[dict]:
    return store.units()


@router.get("/fleet")
def fleet(user: AdminUser, svc: ServicesDep) -> list[dict]:
    return fleet_units(svc)


@router.post("/units")
def admin_add_unit(body: UnitBody, user: AdminUser, store: StoreDep) -> dict:
    """Pre-register a unit (or move it to a room): it appears before it is enrolled, so an
    enrolment code can be made for it."""
    if not topics.valid_unit_id(body.id) or body.id in pki.RESERVED_CNS:
        raise refuse(400, "bad_unit_id", "unit id: letters, digits, '.', '_', '-' only "
                     "(not relay/broker/admin)")
    room = body.room.strip() if body.room is not None else None
    created = store.ensure_unit(body.id, room or None)
    if room:
        try:
            store.clinic.add_room(room)
        except RoomExists:
            pass
    store.audit(user.id, "unit_registered" if created else "unit_saved", body.id,
                {"room": room})
    return {"ok": True, "created": created}


@router.patch("/units/{unit_id}")
def move_unit(unit_id: str, body: UnitPatch, user: AdminUser, store: StoreDep) -> dict:
    if store.unit(unit_id) is None:
        raise refuse(404, "unknown_unit", f"no unit {unit_id}")
    room = body.room.strip()
    if room and not store.clinic.room_exists(room):
        raise refuse(404, "unknown_room", f"no room {room!r}: add it first")
    store.clinic.set_unit_room(unit_id, room or None)
    store.audit(user.id, "unit_moved", unit_id, {"room": room or None})
    return {"ok": True}


@router.post("/units/{unit_id}/revoke")
def revoke_unit(unit_id: str, body: RevokeBody, user: AdminUser, svc: ServicesDep) -> dict:
    """Revoke a unit: the authority's new revocation list (signed in the admin's browser)
    must name every signing key bound to the unit; every transport certificate of the unit
    goes in the broker's CRL (cloud_relay.revocation), and its live connection is ended. A
    revoked unit is enrolled again only with a new code the authority grants."""
    store = svc.store
    if store.unit(unit_id) is None:
        raise refuse(404, "unknown_unit", f"no unit {unit_id}")
    st = trust_api.statement(body.statement)
    try:
        new = trust.verify_revocations(trust_api.authority(store), st.to_dict())
    except trust.TrustError as e:
        raise refuse(400, "bad_revocations", str(e)) from e
    named = {k for u, k, _after in new.units if u == unit_id}
    missing = [b["key_id"] for b in store.trust.bindings(unit_id) if b["key_id"] not in named]
    if missing:
        raise refuse(400, "keys_not_revoked", f"the revocation list does not name the unit's "
                     f"signing keys {', '.join(missing)}", keys=missing)
    done = trust_api.admin_revocations(trust_api.StatementBody(statement=st.to_dict()), user,
                                       svc)
    store.clinic.set_revoked(unit_id, user.id)
    # the whole unit is revoked: its certificates bound to no named key go too
    tr = transport(svc)
    tr.import_enrolled(unit_id)
    left = [c["serial"] for c in store.certs.of(unit_id) if c["state"] != REVOKED]
    more = tr.revoke(left, "key_compromise", user.id) if left else {}
    crl = any(bool((r.get("broker") or {}).get("crl"))
              for r in (done.get("transport") or {}, more))
    store.audit(user.id, "unit_revoked", unit_id, {"serial": new.serial,
                                                   "keys": sorted(named), "crl": crl})
    log.info("event=unit_revoked unit=%s serial=%d", unit_id, new.serial)
    return {"ok": True, "serial": new.serial, "crl_updated": crl}


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


@router.delete("/token-requests/{request_id}")
def decline_token_request(request_id: str, user: AdminUser, store: StoreDep) -> dict:
    r = store.trust.token_request(request_id)
    if r is None or not store.clinic.decline_token_request(request_id):
        raise refuse(404, "unknown_request", "no such pending request")
    store.audit(user.id, "token_declined", r["unit"], {"request": request_id,
                                                       "action": r["action"]})
    return {"ok": True}


# ---------------------------------------------------------------------------- alerts, archive


@router.get("/alerts")
def alerts(user: AdminUser, svc: ServicesDep) -> list[dict]:
    """What needs clinic IT now: units offline, spools filling, dead mics, certificates
    expiring, unit alarms."""
    return [a.to_dict() for a in fleet_alerts.fleet_alerts(fleet_units(svc), now_us())]


def retention_days(svc) -> float:
    """The archive's retention: the admin's setting, else the config's."""
    v = svc.store.clinic.setting(RETENTION_SETTING)
    return float(v) if v is not None else svc.cfg.retention_days


@router.get("/archive")
def archive(user: AdminUser, svc: ServicesDep) -> dict:
    return {**svc.store.archive_stats(), "retention_days": retention_days(svc),
            "purge_interval_s": svc.cfg.purge_interval_s}


@router.put("/archive/retention")
def set_retention(body: RetentionBody, user: AdminUser, svc: ServicesDep) -> dict:
    before = retention_days(svc)
    svc.store.clinic.put_setting(RETENTION_SETTING, repr(body.days))
    svc.store.audit(user.id, "retention_changed", None, {"from": before, "to": body.days})
    return {"ok": True, "retention_days": body.days}


@router.post("/archive/purge")
def purge(body: PurgeBody, user: AdminUser, svc: ServicesDep) -> dict:
    """Drop sealed sessions that ended more than `older_than_days` ago (default: the
    retention) now, rather than at the next scheduled purge."""
    days = body.older_than_days if body.older_than_days is not None else retention_days(svc)
    n = svc.store.purge_before(now_us() - int(days * 86400 * 1e6))
    svc.store.audit(user.id, "archive_purged", None, {"sessions": n, "older_than_days": days})
    return {"ok": True, "sessions": n}


# ---------------------------------------------------------------------------- audit


def _audit_query(request: Request) -> dict:
    q = request.query_params

    def num(name: str) -> int | None:
        v = q.get(name)
        if v in (None, ""):
            return None
        try:
            return int(v)
        except ValueError as e:
            raise refuse(400, "bad_filter", f"{name} must be a whole number") from e

    return {"actor": q.get("actor") or None, "action": q.get("action") or None,
            "target": q.get("target") or None, "since_us": num("since_us"),
            "until_us": num("until_us"), "before_id": num("before_id")}


@router.get("/audit")
def admin_audit(request: Request, user: AdminUser, store: StoreDep, limit: int = 200
                ) -> list[dict]:
    """The audit log, newest first: filters actor, action (a trailing * matches a prefix),
    target, since_us, until_us; before_id pages back."""
    return store.clinic.audit(**_audit_query(request), limit=max(1, min(limit, 2000)))


@router.get("/audit/actions")
def audit_actions(user: AdminUser, store: StoreDep) -> list[str]:
    return store.clinic.audit_actions()


def _cell(v) -> str:
    """A CSV cell a spreadsheet will not run as a formula (the actor of a failed sign-in
    is whatever was typed)."""
    s = "" if v is None else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


@router.get("/audit.csv")
def audit_csv(request: Request, user: AdminUser, store: StoreDep, limit: int = 10000
              ) -> Response:
    rows = store.clinic.audit(**_audit_query(request), limit=max(1, min(limit, 100_000)))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "time_utc", "actor", "action", "target", "detail"])
    for r in rows:
        w.writerow([r["id"], _when(r["at_us"]), _cell(r["actor"]), _cell(r["action"]),
                    _cell(r["target"]), _cell(json.dumps(r["detail"], sort_keys=True))])
    store.audit(user.id, "audit_exported", None, {"rows": len(rows)})
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Response(buf.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition":
                             f'attachment; filename="scribelink-audit-{stamp}.csv"'})


# ---------------------------------------------------------------------------- the relay itself


def clinic_name(svc) -> str:
    from urllib.parse import urlparse

    v = svc.store.clinic.setting(CLINIC_SETTING)
    return v or urlparse(svc.cfg.public_url).hostname or "clinic"


@router.get("/relay")
def relay_info(request: Request, user: AdminUser, svc: ServicesDep) -> dict:
    """What the admin view needs to make enrolment codes and to compare fingerprints."""
    cfg, store = svc.cfg, svc.store
    pub = store.trust.get(trust_api.AUTHORITY)
    return {"public_url": (cfg.public_url or str(request.base_url)).rstrip("/"),
            "broker_url": cfg.unit_broker_url, "clinic_name": clinic_name(svc),
            "authority": pub,
            "authority_fingerprint": trust.fingerprint(trust.unb64(pub)) if pub else None,
            "enrolment": bool(cfg.ca_cert_file), "retention_days": retention_days(svc),
            "token_idle_s": cfg.token_idle_s, "api_docs": cfg.api_docs}


@router.put("/settings")
def settings(body: SettingsBody, user: AdminUser, svc: ServicesDep) -> dict:
    before = clinic_name(svc)
    svc.store.clinic.put_setting(CLINIC_SETTING, body.clinic_name.strip())
    svc.store.audit(user.id, "settings_changed", None,
                    {"clinic_name": {"from": before, "to": body.clinic_name.strip()}})
    return {"ok": True}


@router.get("/openapi.json")
def openapi(request: Request, user: AdminUser, svc: ServicesDep) -> dict:
    """The API's description, for admins only (no public /docs; the admin view shows it)."""
    if not svc.cfg.api_docs:
        raise refuse(404, "api_docs_off", "api_docs = false in the relay's config")
    return request.app.openapi()


@router.get("/health")
def health(user: AdminUser, svc: ServicesDep) -> dict:
    """Unit health and archive stats for clinic IT."""
    store, cfg = svc.store, svc.cfg
    units = store.units()
    open_sessions = store.open_sessions([u["id"] for u in units])
    return {"units": [unit_view(u, open_sessions) for u in units],
            "broker": bool(svc.uplink and svc.uplink.connected),
            "archive": {**store.archive_stats(), "retention_days": retention_days(svc),
                        "purge_interval_s": cfg.purge_interval_s},
            "relay": {"client_id": cfg.broker_client_id, "store": store.dialect,
                      "hub": svc.hub.stats(), "writer_failing": svc.writer.failing},
            "server_us": now_us(),
            "server_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
