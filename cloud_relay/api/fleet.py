"""The fleet: per-unit audio settings, signed releases offered to units, what units report
of them, and sealed diagnostics bundles (docs/updates.md, docs/codec.md).

Two kinds of routes. The admin ones (bearer token, clinic admins, on the main listener)
set a unit's codec, upload releases, offer one to a unit, to the units of some rooms or to
a percentage of the fleet (a staged rollout: each unit's place in the order is a hash of
the release and the unit, so raising the percentage only adds units), show each unit's
version, update state, last health and refusals, and ask units for diagnostics. The unit
ones are served only on the mTLS listener (cloud_relay.unit_https, `unit_app`): a unit
fetches a release offered to it (HTTP Range, so an interrupted download resumes), reports
what it did with an offer, and uploads the diagnostics bundle it sealed to the requesting
admin's key.

The relay reads a release's manifest only to show its version; it verifies nothing and
its word counts for nothing: units check every release against the key they pinned.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path

import anyio
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from cloud_relay.api.deps import AdminUser, Services, ServicesDep, refuse
from cloud_relay.config import RelayConfig
from cloud_relay.store import now_us
from cloud_relay.unit_https import UnitId
from scribelink import codec as codecs
from scribelink import fleet
from scribelink import messages as msgs
from scribelink import release as rel

log = logging.getLogger("cloud_relay.fleet")

MAX_DIAGNOSTICS_BYTES = 8 << 20

router = APIRouter(tags=["fleet"])
unit_router = APIRouter(tags=["unit"])


class Files:
    """Where releases and sealed diagnostics bundles live (beside the database)."""

    def __init__(self, cfg: RelayConfig) -> None:
        self.dir = Path(cfg.data_dir) / "releases"
        self.diag_dir = Path(cfg.data_dir) / "diagnostics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.diag_dir.mkdir(parents=True, exist_ok=True)

    def release_path(self, release_id: str) -> Path:
        if len(release_id) != 64 or any(c not in "0123456789abcdef" for c in release_id):
            raise refuse(404, "unknown_release", "no such release")
        return self.dir / f"{release_id}.tar"


def files(svc: Services) -> Files:
    if svc.fleet_files is None:
        svc.fleet_files = Files(svc.cfg)
    return svc.fleet_files


def unit_app(svc: Services) -> FastAPI:
    """The unit routes as their own app, which only the mTLS listener serves."""
    app = FastAPI(title="Scribelink relay: unit endpoints (mTLS)")
    app.state.services = svc
    app.include_router(unit_router)
    from cloud_relay.api.transport import unit_router as renewal_router

    app.include_router(renewal_router)  # certificate renewal
    return app


# ---------------------------------------------------------------------------- audio settings


class AudioBody(BaseModel):
    codec: str = "opus"
    bitrate: int = codecs.DEFAULT_BITRATE


def config_message(unit_id: str, audio: dict) -> dict:
    return msgs.Config(unit=unit_id, audio={"codec": audio["codec"],
                                            "bitrate": audio["bitrate"]},
                       issued_us=now_us()).to_dict()


@router.get("/api/admin/units/{unit_id}/audio")
def get_audio(unit_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    if svc.store.unit(unit_id) is None:
        raise HTTPException(404, f"unknown unit {unit_id}")
    stored = svc.store.unit_audio(unit_id)
    return {"unit": unit_id, "set": stored is not None,
            **(stored or {"codec": "opus", "bitrate": codecs.DEFAULT_BITRATE})}


@router.put("/api/admin/units/{unit_id}/audio")
def put_audio(unit_id: str, body: AudioBody, user: AdminUser, svc: ServicesDep) -> dict:
    store = svc.store
    if store.unit(unit_id) is None:
        raise HTTPException(404, f"unknown unit {unit_id}")
    try:
        codecs.CodecSettings(codec=body.codec, bitrate=body.bitrate)
    except ValueError as e:
        raise HTTPException(400, f"{e}; the codecs are {', '.join(codecs.CODECS)}") from e
    store.set_unit_audio(unit_id, body.codec, body.bitrate)
    store.audit(user.id, "unit_audio_set", unit_id, {"codec": body.codec,
                                                     "bitrate": body.bitrate})
    if svc.uplink is not None:
        svc.uplink.publish_control(unit_id, config_message(unit_id, body.model_dump()),
                                   retain=True)
    return {"ok": True, "unit": unit_id, "codec": body.codec, "bitrate": body.bitrate}


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


# ---------------------------------------------------------------------------- releases and offers


def _publish(svc: Services, unit_id: str, msg: dict) -> None:
    if svc.uplink is None:
        raise refuse(503, "no_broker", "the relay has no broker connection")
    svc.uplink.publish_control(unit_id, msg)


@router.post("/api/admin/releases")
async def upload_release(request: Request, user: AdminUser, svc: ServicesDep) -> dict:
    f = files(svc)
    tmp = f.dir / f".upload-{uuid.uuid4().hex}"
    h, size = hashlib.sha256(), 0
    try:
        async with await anyio.open_file(tmp, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > rel.MAX_RELEASE_BYTES:
                    raise refuse(413, "too_large", "a release is at most 1 GiB")
                h.update(chunk)
                await out.write(chunk)
        try:
            manifest = rel.parse_manifest(rel.read_manifest_doc(tmp))
        except rel.ReleaseError as e:
            raise refuse(400, "not_a_release", f"{e} (build releases with "
                         "`scripts/release build`)") from e
        release_id = h.hexdigest()
        os.replace(tmp, f.release_path(release_id))
    finally:
        tmp.unlink(missing_ok=True)
    fleet_store = svc.store.fleet
    await anyio.to_thread.run_sync(lambda: fleet_store.add_release(
        release_id, manifest.version, list(manifest.hardware), manifest.signer, size, user.id))
    await anyio.to_thread.run_sync(lambda: svc.store.audit(
        user.id, "release_uploaded", release_id[:12],
        {"version": manifest.version, "signer": manifest.signer, "size": size}))
    return await anyio.to_thread.run_sync(lambda: fleet_store.release(release_id)) or {}


@router.get("/api/admin/releases")
def list_releases(user: AdminUser, svc: ServicesDep) -> list[dict]:
    return svc.store.fleet.releases()


@router.post("/api/admin/updates/offers")
def offer(body: OfferBody, user: AdminUser, svc: ServicesDep) -> dict:
    store = svc.store
    release = store.fleet.release(body.release)
    if release is None:
        raise refuse(404, "unknown_release", "upload the release first")
    chosen = [k for k in ("units", "rooms", "percent") if getattr(body, k) is not None]
    if len(chosen) != 1:
        raise refuse(400, "bad_target", "offer to exactly one of: units, rooms, percent")
    units = select_units(store.units(), release_id=release["id"], unit_ids=body.units,
                         rooms=body.rooms, percent=body.percent)
    if not units:
        raise refuse(400, "no_units", "that target reaches no known unit")
    offer_id = uuid.uuid4().hex[:16]
    target = {chosen[0]: getattr(body, chosen[0])}
    now = store.fleet.add_offer(offer_id, release["id"], target, body.permit, user.id, units)
    for unit_id in units:
        _publish(svc, unit_id, fleet.ReleaseOffer(
            unit=unit_id, offer_id=offer_id, release_id=release["id"],
            version=release["version"], size=release["size"],
            path=f"/unit/v1/releases/{release['id']}", permit=body.permit,
            issued_us=now).to_dict())
    store.audit(user.id, "release_offered", release["version"],
                {"offer_id": offer_id, "target": target, "units": len(units),
                 "downgrade_permit": body.permit is not None})
    return {"offer_id": offer_id, "version": release["version"], "units": units}


@router.get("/api/admin/updates")
def fleet_view(user: AdminUser, svc: ServicesDep) -> dict:
    store = svc.store
    reports = store.fleet.reports(limit=500)
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
    return {"releases": store.fleet.releases(), "offers": store.fleet.offers(),
            "units": units, "reports": reports[:100],
            "diagnostics": store.fleet.diagnostics_list()}


# ---------------------------------------------------------------------------- diagnostics


@router.post("/api/admin/units/{unit_id}/diagnostics")
def request_diagnostics(unit_id: str, body: DiagnosticsBody, user: AdminUser,
                        svc: ServicesDep) -> dict:
    store = svc.store
    if store.unit(unit_id) is None:
        raise refuse(404, "unknown_unit", f"no unit {unit_id}")
    request_id = uuid.uuid4().hex[:16]
    try:
        msg = fleet.DiagnosticsRequest.from_dict(fleet.DiagnosticsRequest(
            unit=unit_id, request_id=request_id, recipient=body.public_key, admin=user.id,
            path=f"/unit/v1/diagnostics/{request_id}", issued_us=now_us()).to_dict())
    except msgs.MessageError as e:
        raise refuse(400, "bad_public_key", str(e)) from e
    store.fleet.add_diagnostics(request_id, unit_id, user.id, body.public_key, msg.issued_us)
    _publish(svc, unit_id, msg.to_dict())
    store.audit(user.id, "diagnostics_requested", unit_id, {"request_id": request_id})
    return {"request_id": request_id}


@router.get("/api/admin/diagnostics/{request_id}")
def download_diagnostics(request_id: str, user: AdminUser, svc: ServicesDep) -> dict:
    """The sealed bundle, base64 in JSON with what opening it needs (unit, request id):
    `scripts/diagnostics open --key K FILE` reads exactly this."""
    d = svc.store.fleet.diagnostics(request_id)
    if d is None or d["uploaded_us"] is None:
        raise refuse(404, "not_uploaded", "no bundle for that request (yet)")
    svc.store.audit(user.id, "diagnostics_downloaded", d["unit"], {"request_id": request_id})
    sealed = (files(svc).diag_dir / f"{request_id}.sealed").read_bytes()
    return {"format": "scribelink-sealed-diagnostics/1", "unit": d["unit"],
            "request_id": request_id, "recipient": d["recipient"],
            "uploaded_us": d["uploaded_us"], "bundle_b64": base64.b64encode(sealed).decode()}


# ---------------------------------------------------------------------------- the unit side (mTLS)


@unit_router.get("/unit/v1/releases/{release_id}")
def fetch_release(release_id: str, unit: UnitId, request: Request,
                  svc: ServicesDep) -> FileResponse:
    store = svc.store
    path = files(svc).release_path(release_id)
    if not store.fleet.offered(unit, release_id) or not path.exists():
        store.audit(unit, "release_fetch_refused", release_id[:12])
        raise refuse(404, "not_offered", "no such release offered to this unit")
    rng = request.headers.get("range", "")
    if not rng or rng.startswith("bytes=0-"):
        store.audit(unit, "release_fetch", release_id[:12])
    else:
        store.audit(unit, "release_fetch_resumed", release_id[:12], {"range": rng[:40]})
    return FileResponse(path, media_type="application/x-tar")


@unit_router.post("/unit/v1/update-reports")
async def report(unit: UnitId, request: Request, svc: ServicesDep) -> dict:
    try:
        r = fleet.UpdateReport.from_dict(json.loads(await request.body()))
    except (ValueError, msgs.MessageError) as e:
        raise refuse(400, "bad_report", str(e)) from e
    store = svc.store

    def save() -> None:
        store.fleet.add_report(unit, r.offer_id, r.state, r.version_from, r.version_to,
                               r.code, r.reason, r.detail, r.at_us)
        if r.state in ("refused", "rolled_back", "applied", "failed"):
            store.audit(unit, f"update_{r.state}", r.version_to,
                        {"from": r.version_from, "code": r.code, "reason": r.reason})

    await anyio.to_thread.run_sync(save)
    log.info("event=update_report unit=%s state=%s to=%s code=%s", unit, r.state,
             r.version_to, r.code)
    return {"ok": True}


@unit_router.post("/unit/v1/diagnostics/{request_id}")
async def upload_diagnostics(request_id: str, unit: UnitId, request: Request,
                             svc: ServicesDep) -> dict:
    store = svc.store
    d = await anyio.to_thread.run_sync(lambda: store.fleet.diagnostics(request_id))
    if d is None or d["unit"] != unit:
        raise refuse(404, "unknown_request", "no diagnostics request for this unit")
    if d["uploaded_us"] is not None:
        raise refuse(409, "already_uploaded", "this request was answered already")
    body = await request.body()
    if not 0 < len(body) <= MAX_DIAGNOSTICS_BYTES:
        raise refuse(413, "bad_size", "a diagnostics bundle is 1 byte to 8 MiB")
    path = files(svc).diag_dir / f"{request_id}.sealed"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    os.replace(tmp, path)

    def save() -> None:
        store.fleet.diagnostics_uploaded(request_id, len(body))
        store.audit(unit, "diagnostics_uploaded", unit, {"request_id": request_id,
                                                         "bytes": len(body)})

    await anyio.to_thread.run_sync(save)
    return {"ok": True}
