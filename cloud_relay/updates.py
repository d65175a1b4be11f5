"""Fleet updates and diagnostics on the relay: releases, offers, what units report, sealed
diagnostics bundles. docs/updates.md.

Two routers. The admin one (bearer token, clinic admins) uploads releases, offers one to a
unit, to the units of some rooms or to a percentage of the fleet (a staged rollout: each
unit's place in the order is a hash of the release and the unit, so raising the
percentage only adds units), shows each unit's version, update state, last health and
refusals, and asks units for diagnostics. The unit one is served only on the mTLS
listener (cloud_relay.unit_https): a unit fetches a release offered to it (HTTP Range, so
an interrupted download resumes), reports what it did with an offer, and uploads the
diagnostics bundle it sealed to the requesting admin's key.

The relay reads a release's manifest only to show its version; it verifies nothing and
its word counts for nothing: units check every release against the key they pinned.
"""

import base64
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from cloud_relay.auth import admin_dependency, current_user_dependency
from cloud_relay.config import RelayConfig
from cloud_relay.store import Store, User, now_us
from cloud_relay.unit_https import UnitId
from scribelink import fleet
from scribelink import release as rel
from scribelink.messages import MessageError

log = logging.getLogger("cloud_relay.updates")

MAX_DIAGNOSTICS_BYTES = 8 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS releases (
    id TEXT PRIMARY KEY,              -- sha256 of the tar
    version TEXT NOT NULL,
    hardware TEXT NOT NULL,           -- JSON list
    signer TEXT,
    size INTEGER NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS offers (
    id TEXT PRIMARY KEY,
    release_id TEXT NOT NULL REFERENCES releases(id),
    target TEXT NOT NULL,             -- JSON: {"units": [..]} | {"rooms": [..]} | {"percent": n}
    permit TEXT,
    created_by TEXT NOT NULL,
    created_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS offer_units (
    offer_id TEXT NOT NULL REFERENCES offers(id),
    unit_id TEXT NOT NULL,
    state TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (offer_id, unit_id)
);
CREATE TABLE IF NOT EXISTS update_reports (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    unit_id TEXT NOT NULL,
    offer_id TEXT,
    state TEXT NOT NULL,
    version_from TEXT,
    version_to TEXT,
    code TEXT,
    reason TEXT,
    detail TEXT,
    at_us INTEGER NOT NULL,
    received_us INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS update_reports_unit ON update_reports(unit_id, id);
CREATE TABLE IF NOT EXISTS diagnostics (
    id TEXT PRIMARY KEY,
    unit_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    recipient TEXT NOT NULL,
    requested_us INTEGER NOT NULL,
    uploaded_us INTEGER,
    size INTEGER
);
"""


# ---------------------------------------------------------------------------- staged rollout


def rollout_bucket(release_id: str, unit_id: str) -> int:
    """0..99, stable for a release and a unit."""
    h = hashlib.sha256(f"{release_id}|{unit_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") % 100


def select_units(units: list[dict], *, release_id: str, unit_ids: list[str] | None = None,
                 rooms: list[str] | None = None, percent: int | None = None) -> list[str]:
    """Which of `units` ({"id", "room"}) an offer reaches: the named units, the units in the
    named rooms, or `percent` of the fleet. Pure."""
    known = {u["id"]: u for u in units}
    if unit_ids is not None:
        return sorted(u for u in set(unit_ids) if u in known)
    if rooms is not None:
        want = set(rooms)
        return sorted(u["id"] for u in units if u.get("room") in want)
    if percent is not None:
        return sorted(u["id"] for u in units if rollout_bucket(release_id, u["id"]) < percent)
    return []


# ---------------------------------------------------------------------------- bodies


class OfferBody(BaseModel):
    release: str = Field(min_length=64, max_length=64)
    units: list[str] | None = None
    rooms: list[str] | None = None
    percent: int | None = Field(default=None, ge=1, le=100)
    permit: dict | None = None  # downgrade permit (scripts/release permit-downgrade)


class DiagnosticsBody(BaseModel):
    public_key: str = Field(max_length=64)


def _refuse(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status, {"error": code, "message": message})


# ---------------------------------------------------------------------------- the routers


class Fleet:
    """The data side: releases on disk, rows in the relay's database."""

    def __init__(self, store: Store, cfg: RelayConfig) -> None:
        self.store = store
        self.dir = Path(cfg.data_dir) / "releases"
        self.diag_dir = Path(cfg.data_dir) / "diagnostics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.diag_dir.mkdir(parents=True, exist_ok=True)
        for statement in SCHEMA.split(";"):  # the store's one entry point, as enroll.py uses it
            if statement.strip():
                store._x(statement)

    def release_path(self, release_id: str) -> Path:
        if len(release_id) != 64 or any(c not in "0123456789abcdef" for c in release_id):
            raise _refuse(404, "unknown_release", "no such release")
        return self.dir / f"{release_id}.tar"

    def release(self, release_id: str) -> dict | None:
        r = self.store._x("SELECT id,version,hardware,signer,size,uploaded_by,uploaded_us "
                          "FROM releases WHERE id=?", (release_id,)).fetchone()
        return None if r is None else self._release_row(r)

    @staticmethod
    def _release_row(r) -> dict:
        return {"id": r[0], "version": r[1], "hardware": json.loads(r[2]), "signer": r[3],
                "size": r[4], "uploaded_by": r[5], "uploaded_us": r[6]}

    def releases(self) -> list[dict]:
        rows = self.store._x("SELECT id,version,hardware,signer,size,uploaded_by,uploaded_us "
                             "FROM releases ORDER BY uploaded_us DESC").fetchall()
        return [self._release_row(r) for r in rows]

    def offered(self, unit_id: str, release_id: str) -> bool:
        return self.store._x("SELECT 1 FROM offer_units ou JOIN offers o ON o.id=ou.offer_id "
                             "WHERE ou.unit_id=? AND o.release_id=?",
                             (unit_id, release_id)).fetchone() is not None

    def reports(self, unit_id: str | None = None, limit: int = 200) -> list[dict]:
        where, args = ("WHERE unit_id=?", (unit_id,)) if unit_id else ("", ())
        rows = self.store._x(
            f"SELECT id,unit_id,offer_id,state,version_from,version_to,code,reason,detail,"
            f"at_us,received_us FROM update_reports {where} ORDER BY id DESC LIMIT ?",
            (*args, limit)).fetchall()
        return [{"id": r[0], "unit": r[1], "offer_id": r[2], "state": r[3], "from": r[4],
                 "to": r[5], "code": r[6], "reason": r[7], "detail": json.loads(r[8] or "{}"),
                 "at_us": r[9], "received_us": r[10]} for r in rows]

    def offers(self, limit: int = 50) -> list[dict]:
        rows = self.store._x(
            "SELECT o.id,o.release_id,r.version,o.target,o.created_by,o.created_us,"
            "(SELECT COUNT(*) FROM offer_units WHERE offer_id=o.id) FROM offers o "
            "JOIN releases r ON r.id=o.release_id ORDER BY o.created_us DESC LIMIT ?",
            (limit,)).fetchall()
        return [{"id": r[0], "release": r[1], "version": r[2], "target": json.loads(r[3]),
                 "created_by": r[4], "created_us": r[5], "units": r[6]} for r in rows]


def mount(app: FastAPI, store: Store, cfg: RelayConfig, bridge) -> None:
    """Admin routes on `app`; the unit routes on a separate app, `app.state.unit_app`,
    which only the mTLS listener serves."""
    data = Fleet(store, cfg)
    app.include_router(admin_router(data, store, bridge))
    unit_app = FastAPI(title="Scribelink relay: unit endpoints (mTLS)")
    unit_app.include_router(unit_router(data, store))
    app.state.unit_app = unit_app
    app.state.fleet = data


def admin_router(data: Fleet, store: Store, bridge) -> APIRouter:
    router = APIRouter()
    # evaluated here (no postponed annotations in this module): FastAPI reads the local type
    Admin = Annotated[User, Depends(admin_dependency(current_user_dependency(store)))]

    def publish(unit_id: str, msg: dict) -> None:
        if bridge is None:
            raise _refuse(503, "no_broker", "the relay has no broker connection")
        bridge.publish_control(unit_id, msg)

    @router.post("/api/admin/releases")
    async def upload_release(request: Request, user: Admin) -> dict:
        tmp = data.dir / f".upload-{uuid.uuid4().hex}"
        h, size = hashlib.sha256(), 0
        try:
            async with await anyio.open_file(tmp, "wb") as f:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > rel.MAX_RELEASE_BYTES:
                        raise _refuse(413, "too_large", "a release is at most 1 GiB")
                    h.update(chunk)
                    await f.write(chunk)
            try:
                manifest = rel.parse_manifest(rel.read_manifest_doc(tmp))
            except rel.ReleaseError as e:
                raise _refuse(400, "not_a_release", f"{e} (build releases with "
                              "`scripts/release build`)") from e
            release_id = h.hexdigest()
            os.replace(tmp, data.release_path(release_id))
        finally:
            tmp.unlink(missing_ok=True)
        store._x("INSERT OR IGNORE INTO releases(id,version,hardware,signer,size,uploaded_by,"
                 "uploaded_us) VALUES(?,?,?,?,?,?,?)",
                 (release_id, manifest.version, json.dumps(list(manifest.hardware)),
                  manifest.signer, size, user.id, now_us()))
        store.audit(user.id, "release_uploaded", release_id[:12],
                    {"version": manifest.version, "signer": manifest.signer, "size": size})
        return data.release(release_id) or {}

    @router.get("/api/admin/releases")
    def list_releases(user: Admin) -> list[dict]:
        return data.releases()

    @router.post("/api/admin/updates/offers")
    def offer(body: OfferBody, user: Admin) -> dict:
        release = data.release(body.release)
        if release is None:
            raise _refuse(404, "unknown_release", "upload the release first")
        chosen = [k for k in ("units", "rooms", "percent") if getattr(body, k) is not None]
        if len(chosen) != 1:
            raise _refuse(400, "bad_target", "offer to exactly one of: units, rooms, percent")
        units = select_units(store.units(), release_id=release["id"], unit_ids=body.units,
                             rooms=body.rooms, percent=body.percent)
        if not units:
            raise _refuse(400, "no_units", "that target reaches no known unit")
        offer_id = uuid.uuid4().hex[:16]
        now = now_us()
        target = {chosen[0]: getattr(body, chosen[0])}
        store._x("INSERT INTO offers(id,release_id,target,permit,created_by,created_us) "
                 "VALUES(?,?,?,?,?,?)", (offer_id, release["id"], json.dumps(target),
                                         json.dumps(body.permit) if body.permit else None,
                                         user.id, now))
        for unit_id in units:
            store._x("INSERT INTO offer_units(offer_id,unit_id,state,updated_us) "
                     "VALUES(?,?,?,?)", (offer_id, unit_id, "offered", now))
            publish(unit_id, fleet.ReleaseOffer(
                unit=unit_id, offer_id=offer_id, release_id=release["id"],
                version=release["version"], size=release["size"],
                path=f"/unit/v1/releases/{release['id']}", permit=body.permit,
                issued_us=now).to_dict())
        store.audit(user.id, "release_offered", release["version"],
                    {"offer_id": offer_id, "target": target, "units": len(units),
                     "downgrade_permit": body.permit is not None})
        return {"offer_id": offer_id, "version": release["version"], "units": units}

    @router.get("/api/admin/updates")
    def fleet_view(user: Admin) -> dict:
        reports = data.reports(limit=500)
        units = []
        for u in store.units():
            st = u.get("status") or {}
            mine = [r for r in reports if r["unit"] == u["id"]]
            refusals = [r for r in mine if r["state"] in ("refused", "rolled_back", "failed")]
            upd = st.get("update") or {}
            units.append({"id": u["id"], "room": u["room"], "version": st.get("version"),
                          "online": st.get("online"), "update": upd,
                          "health": upd.get("health"), "last_report": mine[0] if mine else None,
                          "last_refusal": refusals[0] if refusals else None,
                          "status_at_us": u.get("status_at_us")})
        return {"releases": data.releases(), "offers": data.offers(), "units": units,
                "reports": reports[:100], "diagnostics": diagnostics_list(store)}

    @router.post("/api/admin/units/{unit_id}/diagnostics")
    def request_diagnostics(unit_id: str, body: DiagnosticsBody,
                            user: Admin) -> dict:
        if store.unit(unit_id) is None:
            raise _refuse(404, "unknown_unit", f"no unit {unit_id}")
        request_id = uuid.uuid4().hex[:16]
        try:
            msg = fleet.DiagnosticsRequest.from_dict(fleet.DiagnosticsRequest(
                unit=unit_id, request_id=request_id, recipient=body.public_key, admin=user.id,
                path=f"/unit/v1/diagnostics/{request_id}", issued_us=now_us()).to_dict())
        except MessageError as e:
            raise _refuse(400, "bad_public_key", str(e)) from e
        store._x("INSERT INTO diagnostics(id,unit_id,requested_by,recipient,requested_us) "
                 "VALUES(?,?,?,?,?)", (request_id, unit_id, user.id, body.public_key,
                                       msg.issued_us))
        publish(unit_id, msg.to_dict())
        store.audit(user.id, "diagnostics_requested", unit_id, {"request_id": request_id})
        return {"request_id": request_id}

    @router.get("/api/admin/diagnostics/{request_id}")
    def download_diagnostics(request_id: str, user: Admin) -> dict:
        """The sealed bundle, base64 in JSON with what opening it needs (unit, request id):
        `scripts/diagnostics open --key K FILE` reads exactly this."""
        r = store._x("SELECT unit_id,uploaded_us,recipient FROM diagnostics WHERE id=?",
                     (request_id,)).fetchone()
        if r is None or r[1] is None:
            raise _refuse(404, "not_uploaded", "no bundle for that request (yet)")
        store.audit(user.id, "diagnostics_downloaded", r[0], {"request_id": request_id})
        sealed = (data.diag_dir / f"{request_id}.sealed").read_bytes()
        return {"format": "scribelink-sealed-diagnostics/1", "unit": r[0],
                "request_id": request_id, "recipient": r[2], "uploaded_us": r[1],
                "bundle_b64": base64.b64encode(sealed).decode()}

    return router


def diagnostics_list(store: Store) -> list[dict]:
    rows = store._x("SELECT id,unit_id,requested_by,requested_us,uploaded_us,size FROM "
                    "diagnostics ORDER BY requested_us DESC LIMIT 50").fetchall()
    return [{"id": r[0], "unit": r[1], "requested_by": r[2], "requested_us": r[3],
             "uploaded_us": r[4], "size": r[5]} for r in rows]


def unit_router(data: Fleet, store: Store) -> APIRouter:
    router = APIRouter()

    @router.get("/unit/v1/releases/{release_id}")
    def fetch_release(release_id: str, unit: UnitId, request: Request) -> FileResponse:
        path = data.release_path(release_id)
        if not data.offered(unit, release_id) or not path.exists():
            store.audit(unit, "release_fetch_refused", release_id[:12])
            raise _refuse(404, "not_offered", "no such release offered to this unit")
        rng = request.headers.get("range", "")
        if not rng or rng.startswith("bytes=0-"):
            store.audit(unit, "release_fetch", release_id[:12])
        else:
            store.audit(unit, "release_fetch_resumed", release_id[:12],
                        {"range": rng[:40]})
        return FileResponse(path, media_type="application/x-tar")

    @router.post("/unit/v1/update-reports")
    async def report(unit: UnitId, request: Request) -> dict:
        try:
            r = fleet.UpdateReport.from_dict(json.loads(await request.body()))
        except (ValueError, MessageError) as e:
            raise _refuse(400, "bad_report", str(e)) from e
        store._x("INSERT INTO update_reports(unit_id,offer_id,state,version_from,version_to,"
                 "code,reason,detail,at_us,received_us) VALUES(?,?,?,?,?,?,?,?,?,?)",
                 (unit, r.offer_id, r.state, r.version_from, r.version_to, r.code, r.reason,
                  json.dumps(r.detail), r.at_us, now_us()))
        if r.offer_id:
            store._x("UPDATE offer_units SET state=?, updated_us=? WHERE offer_id=? AND "
                     "unit_id=?", (r.state, now_us(), r.offer_id, unit))
        if r.state in ("refused", "rolled_back", "applied", "failed"):
            store.audit(unit, f"update_{r.state}", r.version_to,
                        {"from": r.version_from, "code": r.code, "reason": r.reason})
        log.info("event=update_report unit=%s state=%s to=%s code=%s", unit, r.state,
                 r.version_to, r.code)
        return {"ok": True}

    @router.post("/unit/v1/diagnostics/{request_id}")
    async def upload_diagnostics(request_id: str, unit: UnitId, request: Request) -> dict:
        row = store._x("SELECT unit_id,uploaded_us FROM diagnostics WHERE id=?",
                       (request_id,)).fetchone()
        if row is None or row[0] != unit:
            raise _refuse(404, "unknown_request", "no diagnostics request for this unit")
        if row[1] is not None:
            raise _refuse(409, "already_uploaded", "this request was answered already")
        body = await request.body()
        if not 0 < len(body) <= MAX_DIAGNOSTICS_BYTES:
            raise _refuse(413, "bad_size", "a diagnostics bundle is 1 byte to 8 MiB")
        path = data.diag_dir / f"{request_id}.sealed"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        store._x("UPDATE diagnostics SET uploaded_us=?, size=? WHERE id=?",
                 (now_us(), len(body), request_id))
        store.audit(unit, "diagnostics_uploaded", unit, {"request_id": request_id,
                                                         "bytes": len(body)})
        return {"ok": True}

    return router
