"""What the clinic authority signed, stored and handed out by the relay (docs/trust.md).

The relay holds no key that decides anything here. It keeps the authority's public key,
scribe devices (registered by the scribes, endorsed by the authority or by a sibling device
of the same scribe), each unit's signed assignment, the signed revocation list, enrolment
grants and the bindings they produced, and provisioning tokens; it publishes each unit's
assignment with the endorsements of its scribes' devices and the revocations, retained on
the unit's control topic. It checks every statement against the authority before storing
it, to refuse junk and mistakes early; units and receivers check everything themselves.
"""

from __future__ import annotations

import json
import logging
import uuid

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cloud_relay import pki
from cloud_relay.api.deps import AdminUser, CurrentUser, InstallerUser, ServicesDep, refuse
from cloud_relay.store import Store, now_us
from scribelink import messages as msgs
from scribelink import topics, trust

log = logging.getLogger("cloud_relay.trust")

router = APIRouter(tags=["trust"])

AUTHORITY = "authority"
REVOCATIONS = "revocations"


class PublicKeyBody(BaseModel):
    public_key: str = Field(max_length=64)


class DeviceBody(BaseModel):
    enc_key: str = Field(max_length=64)  # base64 raw X25519
    sign_key: str = Field(max_length=64)  # base64 raw Ed25519
    label: str = Field(default="device", max_length=64)
    kind: str = Field(default="person", pattern="^(person|robot)$")


class StatementBody(BaseModel):
    statement: dict


class GrantBody(BaseModel):
    grant: dict
    proof_hash: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")


class TokenRequestBody(BaseModel):
    unit: str = Field(max_length=64)
    action: str = Field(pattern="^(unlock|factory_reset|set_trust|release)$")
    args: dict = Field(default_factory=dict)


def authority(store: Store):
    pub = store.trust.get(AUTHORITY)
    if pub is None:
        raise refuse(409, "no_authority", "this relay knows no clinic authority yet: the "
                     "clinic's admin registers it (python -m scribelink.authority register)")
    return trust.load_ed25519(pub)


def revocations(store: Store) -> trust.Revocations:
    doc = store.trust.get(REVOCATIONS)
    if doc is None:
        return trust.Revocations()
    return trust.verify_revocations(authority(store), json.loads(doc))


def statement(body: dict) -> trust.Statement:
    try:
        return trust.Statement.from_dict(body)
    except trust.TrustError as e:
        raise refuse(400, "bad_statement", str(e)) from e


# ---------------------------------------------------------------------------- what anyone may read


@router.get("/api/trust")
def trust_info(user: CurrentUser, svc: ServicesDep) -> dict:
    """The authority (for first-use pinning: compare its fingerprint with the clinic's
    admin) and its latest revocation list."""
    pub = svc.store.trust.get(AUTHORITY)
    rv = svc.store.trust.get(REVOCATIONS)
    return {"authority": pub,
            "fingerprint": trust.fingerprint(trust.unb64(pub)) if pub else None,
            "revocations": json.loads(rv) if rv else None}


@router.put("/api/admin/authority")
def set_authority(body: PublicKeyBody, user: AdminUser, svc: ServicesDep) -> dict:
    store = svc.store
    try:
        raw = trust.unb64(body.public_key, what="public_key", length=32)
        trust.load_ed25519(raw)
    except trust.TrustError as e:
        raise refuse(400, "bad_public_key", str(e)) from e
    current = store.trust.get(AUTHORITY)
    if current is not None and current != body.public_key:
        raise refuse(409, "authority_set", "this relay already serves another clinic "
                     "authority; units and consoles pinned it, so it is not replaced here")
    if current is None:
        store.trust.put(AUTHORITY, body.public_key)
        store.audit(user.id, "authority_registered", None,
                    {"fingerprint": trust.fingerprint(raw)})
    return {"fingerprint": trust.fingerprint(raw)}


# ---------------------------------------------------------------------------- scribe devices


def device_view(d: dict) -> dict:
    return {"device": d["device"], "user": d["user"], "label": d["label"], "kind": d["kind"],
            "enc_key": trust.b64(d["enc_key"]), "sign_key": trust.b64(d["sign_key"]),
            "created_us": d["created_us"], "endorsed": d["endorsement"] is not None,
            "endorsed_by": d["endorsed_by"], "endorsed_us": d["endorsed_us"]}


@router.put("/api/me/device")
def register_device(body: DeviceBody, user: CurrentUser, svc: ServicesDep) -> dict:
    """A scribe's device names its keys. No unit wraps to it until the clinic authority
    (or an endorsed device of the same scribe) has endorsed it."""
    store = svc.store
    if user.role != "scribe":
        raise refuse(403, "not_a_scribe", "only scribes register devices that hear rooms")
    try:
        enc = trust.check_x25519(trust.unb64(body.enc_key, what="enc_key", length=32))
        sign = trust.unb64(body.sign_key, what="sign_key", length=32)
        trust.load_ed25519(sign)
    except (trust.TrustError, ValueError) as e:
        raise refuse(400, "bad_device_key", f"{e}: register a fresh key pair") from e
    device = trust.key_id(sign)
    if store.trust.add_device(device, user.id, enc, sign, body.label, body.kind):
        store.audit(user.id, "device_registered", device, {"label": body.label,
                                                            "kind": body.kind})
    d = store.trust.device(device)
    assert d is not None
    if d["user"] != user.id or d["enc_key"] != enc:
        raise refuse(409, "device_taken", "this signing key is registered already")
    return device_view(d)


@router.get("/api/me/devices")
def my_devices(user: CurrentUser, svc: ServicesDep) -> list[dict]:
    return [{**device_view(d), "endorsement": d["endorsement"]}
            for d in svc.store.trust.devices(user_id=user.id)]


@router.post("/api/me/devices/{device}/endorsement")
def sibling_endorsement(device: str, body: StatementBody, user: CurrentUser,
                        svc: ServicesDep) -> dict:
    """A scribe's endorsed device vouches for the same scribe's new device (a second
    browser at the start of a shift). The admin is told (audit, and the admin view)."""
    store = svc.store
    st = statement(body.statement)
    d = store.trust.device(device)
    if d is None or d["user"] != user.id:
        raise refuse(404, "unknown_device", "no such device of yours")
    endorsers = {x["device"]: x for x in store.trust.devices(user_id=user.id, pending=False)}
    if st.signer not in endorsers or endorsers[st.signer]["endorsed_by"] != "authority":
        raise refuse(403, "not_endorsed_by_you", "the endorsement must be signed by one of "
                     "your devices the clinic authority endorsed")
    _store_endorsement(store, st, d, by=st.signer, actor=user.id)
    store.audit(user.id, "device_endorsed_by_sibling", device,
                {"by": st.signer, "label": d["label"]})
    _republish_for(svc, user.id)
    return {"device": device, "endorsed": True}


def _store_endorsement(store: Store, st: trust.Statement, d: dict, *, by: str,
                       actor: str) -> None:
    got = trust.endorsed_devices(authority(store), [
        *[x["endorsement"] for x in store.trust.devices(user_id=d["user"], pending=False)],
        st.to_dict()], revoked=revocations(store).devices)
    dev = got.get(d["device"])
    if dev is None or dev.enc_key != d["enc_key"] or dev.sign_key != d["sign_key"] or \
            dev.scribe != d["user"]:
        raise refuse(400, "bad_endorsement", "this endorsement does not hold for this "
                     "device (signer, keys or scribe do not match)")
    store.trust.endorse(d["device"], st.to_dict(), by)


@router.get("/api/admin/devices")
def admin_devices(user: AdminUser, svc: ServicesDep, pending: bool | None = None
                  ) -> list[dict]:
    return [device_view(d) for d in svc.store.trust.devices(pending=pending)]


@router.post("/api/admin/endorsements")
def admin_endorse(body: StatementBody, user: AdminUser, svc: ServicesDep) -> dict:
    store = svc.store
    st = statement(body.statement)
    d = store.trust.device(str(st.body.get("device")))
    if d is None:
        raise refuse(404, "unknown_device", "the device named in the endorsement has not "
                     "registered")
    _store_endorsement(store, st, d, by="authority", actor=user.id)
    store.audit(user.id, "device_endorsed", d["device"], {"scribe": d["user"],
                                                          "label": d["label"]})
    _republish_for(svc, d["user"])
    return {"device": d["device"], "endorsed": True}


# ------------------------------------------------------------------------- assignments, revocations


def assignment_message(store: Store, unit_id: str) -> msgs.Assignment | None:
    """What a unit's control topic holds (retained): the signed assignment, the
    endorsements of its scribes' devices, the revocations. None: no signed assignment."""
    st = store.trust.assignment(unit_id)
    if st is None:
        return None
    scribes = list(st["body"].get("scribes") or [])
    devices = tuple(d["endorsement"] for d in store.trust.devices(users=scribes, pending=False))
    rv = store.trust.get(REVOCATIONS)
    return msgs.Assignment(unit=unit_id, assignment=st, devices=devices,
                           revocations=json.loads(rv) if rv else None,
                           issued_us=now_us())


def _republish_for(svc, scribe: str) -> None:
    svc.assignments_changed()
    if svc.uplink is not None:
        for unit_id in svc.store.units_for(scribe):
            svc.uplink.publish_assignment(unit_id)


@router.put("/api/admin/assignments")
def admin_assign(body: StatementBody, user: AdminUser, svc: ServicesDep) -> dict:
    """A unit's assignment, signed by the clinic authority (the relay cannot choose who
    hears a room: the unit checks the signature)."""
    store = svc.store
    st = statement(body.statement)
    unit_id = str(st.body.get("unit"))
    try:
        a = trust.verify_assignment(authority(store), st.to_dict(), unit_id)
    except trust.TrustError as e:
        raise refuse(400, "bad_assignment", f"{e}: sign assignments with the clinic "
                     "authority") from e
    if store.unit(unit_id) is None:
        raise refuse(404, "unknown_unit", f"unknown unit {unit_id}")
    current = store.trust.assignment(unit_id)
    if current is not None and current["body"]["issued_us"] > a["issued_us"]:
        raise refuse(409, "stale_assignment", "an assignment newer than this one is in "
                     "force (units refuse older ones too)")
    scribes = {u.id: u for u in store.users(a["scribes"])}
    for s in a["scribes"]:
        if s not in scribes or scribes[s].role != "scribe":
            raise refuse(400, "not_a_scribe", f"{s} is not a scribe")
    store.trust.set_assignment(unit_id, st.to_dict(), a["issued_us"], a["scribes"])
    store.audit(user.id, "assignment_set", unit_id, {"scribes": a["scribes"]})
    svc.assignments_changed()
    if svc.uplink is not None:
        svc.uplink.publish_assignment(unit_id)
    return {"ok": True, "unit": unit_id, "scribes": a["scribes"]}


@router.put("/api/admin/revocations")
def admin_revocations(body: StatementBody, user: AdminUser, svc: ServicesDep) -> dict:
    store = svc.store
    st = statement(body.statement)
    try:
        new = trust.verify_revocations(authority(store), st.to_dict())
    except trust.TrustError as e:
        raise refuse(400, "bad_revocations", str(e)) from e
    if new.serial <= revocations(store).serial:
        raise refuse(409, "stale_revocations", "a revocation list with this serial or a "
                     "newer one is in force")
    store.trust.put(REVOCATIONS, json.dumps(st.to_dict()))
    store.audit(user.id, "revocations_published", None,
                {"serial": new.serial, "units": [u for u, _k, _a in new.units],
                 "devices": sorted(new.devices)})
    svc.assignments_changed()
    if svc.uplink is not None:
        for u in store.units():
            svc.uplink.publish_assignment(u["id"])
    # a revoked unit key takes its transport certificates with it: refused by the broker,
    # its live connection ended (cloud_relay/revocation.py)
    from cloud_relay.revocation import transport

    transport_done = transport(svc).apply_authority(new, int(st.body.get("issued_us", 0)),
                                                    user.id)
    return {"serial": new.serial, "transport": transport_done}


@router.get("/api/admin/units/{unit_id}/bindings")
def unit_bindings(unit_id: str, user: AdminUser, svc: ServicesDep) -> list[dict]:
    return [{"key_id": b["key_id"], "created_us": b["created_us"]}
            for b in svc.store.trust.bindings(unit_id)]


# ---------------------------------------------------------------------------- enrolment grants


@router.post("/api/admin/enrolment-grants")
def add_grant(body: GrantBody, user: AdminUser, svc: ServicesDep) -> dict:
    """An enrolment code's public half: the authority's grant for one unit id and a hash
    of the code's proof. The code's secret stays with the admin and the tech."""
    store, cfg = svc.store, svc.cfg
    st = statement(body.grant)
    try:
        g = st.verify(authority(store), t=trust.GRANT)
    except trust.TrustError as e:
        raise refuse(400, "bad_grant", str(e)) from e
    unit_id = str(g.get("unit"))
    if not topics.valid_unit_id(unit_id) or pki.reserved_cn(unit_id):
        raise refuse(400, "bad_unit_id", "unit id: letters, digits, '.', '_', '-' only "
                     "(not broker, admin, relay or relay-<name>)")
    if int(g.get("expires_us", 0)) < now_us():
        raise refuse(400, "grant_expired", "this grant has expired already")
    code_id = store.trust.add_grant(body.proof_hash, unit_id, str(g.get("room") or ""),
                                    user.id, int(g["expires_us"]), st.to_dict())
    store.audit(user.id, "enroll_code_created", unit_id,
                {"code_id": code_id, "room": g.get("room"), "granted_by_authority": True})
    return {"code_id": code_id, "unit": unit_id, "broker_url": cfg.unit_broker_url,
            "expires_us": g["expires_us"]}


def check_binding(store: Store, code_id: int, unit_id: str, binding: dict) -> trust.Binding:
    """The unit's signing key binding presented at enrolment: it must chain to the grant
    this code was made with (so only the code's holder could have signed it)."""
    grant = store.trust.grant(code_id)
    if grant is None:
        raise refuse(400, "no_grant", "this code was not granted by the clinic authority")
    try:
        b = trust.verify_binding(authority(store), binding)
    except trust.TrustError as e:
        raise refuse(400, "bad_binding", str(e)) from e
    if b.unit != unit_id or binding["body"].get("grant") != grant:
        raise refuse(400, "bad_binding", "the binding is not under this code's grant")
    return b


# ---------------------------------------------------------------------------- provisioning tokens


@router.post("/api/enroll/token-requests")
def request_token(body: TokenRequestBody, user: InstallerUser, svc: ServicesDep) -> dict:
    """A tech asks the clinic for a one-time token (unlock, factory reset, trust change);
    an admin signs it with the authority; the tech's tool fetches it."""
    store = svc.store
    if store.unit(body.unit) is None:
        raise refuse(404, "unknown_unit", f"unknown unit {body.unit}")
    if body.action == "set_trust":
        # exactly what the admin is asked to sign: the anchors to change, and their values
        if not body.args or not set(body.args) <= set(trust.TRUST_ANCHORS) or not all(
                isinstance(v, str) and 0 < len(v) <= 256 for v in body.args.values()):
            raise refuse(400, "bad_token_args", "a set_trust request names the trust anchors "
                         f"to change ({', '.join(trust.TRUST_ANCHORS)}) and their new values")
    elif body.args:
        raise refuse(400, "bad_token_args", f"a {body.action} token carries no arguments")
    rid = uuid.uuid4().hex[:12]
    store.trust.add_token_request(rid, body.unit, body.action, body.args, user.id)
    store.audit(user.id, "token_requested", body.unit, {"request": rid, "action": body.action,
                                                        "args": body.args})
    return {"request": rid}


@router.get("/api/enroll/token-requests/{request_id}")
def token_status(request_id: str, user: InstallerUser, svc: ServicesDep) -> dict:
    r = svc.store.trust.token_request(request_id)
    if r is None or (r["requested_by"] != user.id and user.role != "admin"):
        raise refuse(404, "unknown_request", "no such request of yours")
    return {"request": r["id"], "unit": r["unit"], "action": r["action"],
            "signed": r["statement"] is not None, "token": r["statement"]}


@router.get("/api/admin/token-requests")
def token_requests(user: AdminUser, svc: ServicesDep, pending: bool = True) -> list[dict]:
    return svc.store.trust.token_requests(pending)


@router.get("/api/admin/token-requests/{request_id}")
def token_request(request_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    r = svc.store.trust.token_request(request_id)
    if r is None:
        raise refuse(404, "unknown_request", "no such request")
    return r


@router.post("/api/admin/token-requests/{request_id}")
def sign_token(request_id: str, body: StatementBody, user: AdminUser, svc: ServicesDep
               ) -> dict:
    store = svc.store
    r = store.trust.token_request(request_id)
    if r is None:
        raise refuse(404, "unknown_request", "no such request")
    try:
        signed = trust.verify_token(authority(store), body.statement, unit=r["unit"],
                                    action=r["action"], now_us=now_us(), used=set())
    except trust.TrustError as e:
        raise refuse(400, "bad_token", str(e)) from e
    if signed.get("args") != r["args"]:
        raise refuse(400, "bad_token", "the token's arguments are not the ones requested")
    if not store.trust.sign_token_request(request_id, body.statement, user.id):
        raise refuse(409, "already_signed", "this request has its token already")
    store.audit(user.id, "token_signed", r["unit"], {"request": request_id,
                                                     "action": r["action"]})
    return {"request": request_id, "signed": True}
