"""Units' transport certificates: what the admin sees and revokes, and the unit's renewal
over its mTLS link (docs/trust.md, "Revocation" and "Renewal").

Renewal: the unit sends a CSR for a new key over the unit HTTPS listener, presenting its
current certificate; the relay signs it for the unit id of that client certificate (never
a CN the request names), records it as the presenting one's successor, and returns it. The
unit installs it, reconnects to the broker with it, and confirms presenting the NEW
certificate; only then is the old one revoked (no takeover: the unit has moved already).
A revoked or unknown-to-the-CA certificate can do none of this.
"""

from __future__ import annotations

import logging

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from cloud_relay import pki, unit_https
from cloud_relay.api.deps import AdminUser, ServicesDep, refuse
from cloud_relay.revocation import NotConfigured, fingerprint, transport
from cloud_relay.store.certs import ISSUED, REVOKED

log = logging.getLogger("cloud_relay.transport")

router = APIRouter(tags=["transport"])
unit_router = APIRouter(tags=["unit"])


class RevokeBody(BaseModel):
    # one certificate; none: every certificate of the unit not revoked yet
    serial: str | None = Field(default=None, max_length=64, pattern="^[0-9a-f]+$")


class CsrBody(BaseModel):
    csr_pem: str = Field(max_length=8192)


def _view(c: dict) -> dict:
    return {k: c[k] for k in ("serial", "fingerprint", "state", "via", "sign_key_id",
                              "issued_us", "not_after_us", "revoked_us", "reason", "renews")}


@router.get("/api/admin/units/{unit_id}/certificates")
def unit_certificates(unit_id: str, user: AdminUser, svc: ServicesDep) -> list[dict]:
    t = transport(svc)
    t.import_enrolled(unit_id)
    return [_view(c) for c in svc.store.certs.of(unit_id)]


@router.post("/api/admin/units/{unit_id}/certificates/revoke")
def revoke_certificates(unit_id: str, body: RevokeBody, user: AdminUser,
                        svc: ServicesDep) -> dict:
    """Cut a unit off the broker now (a lost or stolen unit). This ends its transport only:
    sessions it signs are refused by receivers once the clinic authority revokes its key
    (PUT /api/admin/revocations), which also revokes these certificates."""
    t = transport(svc)
    t.import_enrolled(unit_id)
    certs = {c["serial"]: c for c in svc.store.certs.of(unit_id)}
    if body.serial is not None and body.serial not in certs:
        raise refuse(404, "unknown_certificate", f"no certificate {body.serial} of {unit_id}")
    serials = [body.serial] if body.serial else [s for s, c in certs.items()
                                                 if c["state"] != REVOKED]
    try:
        return t.revoke(serials, "admin", user.id)
    except NotConfigured as e:
        raise refuse(503, "no_transport_ca", str(e)) from e


# ---------------------------------------------------------------------------- the unit (mTLS)


def _presented(request: Request) -> tuple[str, x509.Certificate]:
    """The unit id and certificate the mTLS connection presented (refused if revoked)."""
    unit = unit_https.unit_id(request)
    chain = request.scope["extensions"]["tls"]["client_cert_chain"]
    return unit, x509.load_pem_x509_certificate(chain[0].encode())


@unit_router.post("/unit/v1/certificate/renew")
def renew(body: CsrBody, request: Request, svc: ServicesDep) -> dict:
    unit, cert = _presented(request)
    t = transport(svc)
    current = svc.store.certs.get(pki.serial_hex(cert))
    if current is None:  # issued before the relay kept certificates: known from here on
        t.issued(cert, unit, via="enrol")
        svc.store.certs.activate(pki.serial_hex(cert))
        current = svc.store.certs.get(pki.serial_hex(cert))
    assert current is not None
    try:
        new = pki.sign_csr(t.ca(), body.csr_pem.encode(), unit)
    except pki.CSRError as e:
        raise refuse(400, "bad_csr", f"{e}: make a CSR for a new P-256 key with CN {unit!r}"
                     ) from e
    except NotConfigured as e:
        raise refuse(503, "no_transport_ca", str(e)) from e
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if new.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki):
        raise refuse(400, "same_key", "a renewal needs a new key")
    # one renewal outstanding at a time: an earlier unconfirmed one is revoked, so a unit
    # cannot pile up valid certificates by asking again and again
    earlier = [c["serial"] for c in svc.store.certs.of(unit)
               if c["state"] == ISSUED and c["renews"] == current["serial"]]
    if earlier:
        t.revoke(earlier, "superseded", unit, take_over=False)
    t.issued(new, unit, via="renew", sign_key_id=current["sign_key_id"],
             renews=current["serial"])
    svc.store.audit(unit, "certificate_renewal_issued", unit,
                    {"serial": pki.serial_hex(new), "renews": current["serial"]})
    log.info("event=certificate_renewal_issued unit=%s serial=%s", unit, pki.serial_hex(new))
    return {"unit": unit, "cert_pem": pki.cert_pem(new).decode(),
            "serial": pki.serial_hex(new), "fingerprint_sha256": fingerprint(new),
            "not_after": new.not_valid_after_utc.isoformat(timespec="seconds"),
            "ca_pem": t.ca().cert_pem().decode()}


@unit_router.post("/unit/v1/certificate/confirm")
def confirm(request: Request, svc: ServicesDep) -> dict:
    """Presented with the NEW certificate (which proves the unit installed it): it is in
    use, and the one it renewed is revoked."""
    unit, cert = _presented(request)
    serial = pki.serial_hex(cert)
    c = svc.store.certs.get(serial)
    if c is None or c["cn"] != unit:
        raise refuse(404, "unknown_certificate", "this certificate was not issued by a "
                     "renewal: nothing to confirm")
    if c["state"] == ISSUED:
        svc.store.certs.activate(serial)
    old = svc.store.certs.get(c["renews"]) if c["renews"] else None
    done: dict = {"revoked": []}
    if old is not None and old["state"] != REVOKED:
        done = transport(svc).revoke([old["serial"]], "superseded", unit, take_over=False)
    svc.store.audit(unit, "certificate_renewed", unit, {"serial": serial,
                                                       "revoked": done["revoked"]})
    return {"unit": unit, "serial": serial, "revoked": done["revoked"]}
