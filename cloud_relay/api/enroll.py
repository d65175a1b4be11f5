"""Unit enrollment: enrolment codes, checking a code, signing a unit's CSR against a
reservation, and spending the code when the unit has committed (docs/protocol.md, 10.5).

An admin or tech creates a code for a unit id and room: `scribelink.enrolcode` text that
also carries the relay's and broker's URLs, the clinic and room, and a 128-bit secret. The
relay keeps only SHA-256 of the code's proof (HKDF of the secret); the secret itself never
reaches it. A code expires (1 h by default) and is spent once.

Spending follows the unit's fail-safe, so that a pulled cable never burns a code:
- `check` looks at a code without changing it (pre-checks, before the unit changes);
- `enroll` signs the CSR (CN = unit id, by the clinic CA) against a *reservation* of the
  code for that unit's serial; asking again from the same serial (a resumed enrolment)
  returns the same certificate for the same key, or signs the new key. A reservation
  that is never confirmed lapses after RESERVATION_TTL_S and the code is usable again;
- `confirm` spends the code once the tool saw the unit commit the certificate issued
  under it (matched by fingerprint). It is idempotent: a repeated confirm says so.
The broker's ACL `pattern` rules key on the certificate CN, so the new unit can use its
own topics and nothing else without any broker change. Codes, proofs, passwords and keys
never reach the audit log.
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from cloud_relay import pki
from cloud_relay.api.deps import ConfigDep, InstallerUser, ServicesDep, refuse
from cloud_relay.config import RelayConfig
from cloud_relay.store import Store, User, now_us
from scribelink import enrolcode, topics

log = logging.getLogger("cloud_relay.enroll")

router = APIRouter(prefix="/api/enroll", tags=["enroll"])

DEFAULT_TTL_S = 3600
MAX_TTL_S = 7 * 24 * 3600
# longer than a unit's fail-safe (scribelink.provisioning.FAILSAFE_MAX_S): a unit that
# commits at the last moment can still be confirmed before anyone else may take the code
RESERVATION_TTL_S = 15 * 60


class CodeBody(BaseModel):
    unit: str = Field(max_length=64)
    room: str = Field(min_length=1, max_length=128)
    ttl_s: int = Field(default=DEFAULT_TTL_S, ge=1, le=MAX_TTL_S)
    # what the code tells the tech's tool and the unit; defaults: this relay's host name,
    # the URL the request came in on, the broker this relay uses
    clinic: str | None = Field(default=None, min_length=1, max_length=128)
    relay_url: str | None = Field(default=None, max_length=256)
    broker_url: str | None = Field(default=None, max_length=256)
    recovery_public_key: str | None = Field(default=None, max_length=100)


class ProofBody(BaseModel):
    proof: str = Field(min_length=64, max_length=64, pattern="^[0-9a-fA-F]{64}$")


class CheckBody(ProofBody):
    serial: str = Field(min_length=1, max_length=64)


class EnrollBody(CheckBody):
    csr_pem: str = Field(max_length=8192)
    # the unit's signing key, bound to its unit id under the code's grant (docs/trust.md):
    # required for a code the clinic authority granted
    binding: dict | None = None


class ConfirmBody(ProofBody):
    fingerprint_sha256: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")


def _when(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(us / 1e6))


def ca(cfg: RelayConfig) -> pki.CA:
    if not cfg.ca_cert_file or not cfg.ca_key_file:
        raise refuse(503, "enrollment_disabled", "this relay has no enrollment CA: set "
                     "ca_cert_file and ca_key_file in its config")
    return pki.CA.load(Path(cfg.ca_cert_file), Path(cfg.ca_key_file))


def lookup(store: Store, proof: str, user: User) -> tuple:
    row = store.enroll_code(enrolcode.proof_hash(proof))
    if row is None:
        store.audit(user.id, "enroll_refused", None, {"reason": "unknown_code"})
        raise refuse(400, "enroll_code_unknown", "this relay does not know this enrolment "
                     "code: check it was typed correctly, or create a new one")
    return row


def usable(store: Store, row: tuple, serial: str, user: User, *, audit: bool = True) -> str:
    """-> "unspent" or "reserved_here"; raises if the code cannot enrol this unit."""
    code_id, unit_id, _room, expires_us, used_us, _fp, r_serial, r_until, _pem = row
    now = now_us()
    reserved_here = r_serial == serial and r_until is not None and r_until >= now

    def no(status: int, code: str, reason: str, message: str, **detail) -> HTTPException:
        if audit:
            store.audit(user.id, "enroll_refused", unit_id,
                        {"reason": reason, "code_id": code_id})
        return refuse(status, code, message, **detail)

    if used_us is not None:
        raise no(409, "enroll_code_used", "code_used", "this enrolment code was already "
                 f"used (at {_when(used_us)}): codes work once; create a new one for "
                 "this unit", unit=unit_id)
    if r_serial not in (None, serial) and r_until is not None and r_until >= now:
        raise no(409, "enroll_code_reserved", "code_reserved", "this enrolment code is "
                 f"being used to enrol another unit (serial {r_serial}) until "
                 f"{_when(r_until)}", unit=unit_id, reserved_serial=r_serial)
    if expires_us < now and not reserved_here:
        raise no(410, "enroll_code_expired", "code_expired", "this enrolment code has "
                 "expired: create a new one for this unit", unit=unit_id)
    return "reserved_here" if reserved_here else "unspent"


@router.post("/codes")
def create_code(body: CodeBody, request: Request, user: InstallerUser, svc: ServicesDep,
                cfg: ConfigDep) -> dict:
    store = svc.store
    if not topics.valid_unit_id(body.unit) or body.unit in pki.RESERVED_CNS:
        raise refuse(400, "bad_unit_id", "unit id: letters, digits, '.', '_', '-' only "
                     "(not relay/broker/admin)")
    ca(cfg)  # refuse now, not when the tech is standing at the unit
    relay_url = (body.relay_url or str(request.base_url)).rstrip("/")
    broker_url = body.broker_url or cfg.unit_broker_url
    if urlparse(relay_url).scheme not in ("https", "http") or \
            urlparse(broker_url).scheme != "mqtts":
        raise refuse(400, "bad_url", "relay_url must be https://HOST[:PORT] and "
                     "broker_url mqtts://HOST:PORT")
    recovery = None
    if body.recovery_public_key:
        try:
            recovery = base64.b64decode(body.recovery_public_key, validate=True)
        except ValueError:
            recovery = b""
        if len(recovery) != 32:
            raise refuse(400, "bad_recovery_key", "recovery_public_key must be the "
                         "clinic's base64 raw X25519 public key")
    now = now_us()
    expires = now + body.ttl_s * 1_000_000
    code = enrolcode.EnrolCode.new(
        relay_url=relay_url, broker_url=broker_url,
        clinic=body.clinic or urlparse(relay_url).hostname or "clinic", room=body.room,
        unit_id=body.unit, expires_at=expires // 1_000_000, recovery_public_key=recovery)
    code_id = store.add_enroll_code(enrolcode.proof_hash(code.proof()), body.unit, body.room,
                                    user.id, expires)
    store.audit(user.id, "enroll_code_created", body.unit,
                {"code_id": code_id, "room": body.room, "ttl_s": body.ttl_s})
    return {"code": code.text(), "code_id": code_id, "unit": body.unit,
            "room": body.room, "clinic": code.clinic, "relay_url": relay_url,
            "broker_url": broker_url, "expires_us": expires}


@router.post("/check")
def check(body: CheckBody, user: InstallerUser, svc: ServicesDep) -> dict:
    """Whether this code can enrol the unit with this serial. Changes nothing."""
    row = lookup(svc.store, body.proof, user)
    status = usable(svc.store, row, body.serial, user, audit=False)
    code_id, unit_id, room, expires_us, *_ = row
    return {"code_id": code_id, "unit": unit_id, "room": room, "expires_us": expires_us,
            "status": status, "reserved_until_us": row[7] if status == "reserved_here"
            else None}


@router.post("")
def enroll(body: EnrollBody, user: InstallerUser, svc: ServicesDep, cfg: ConfigDep) -> dict:
    store = svc.store
    row = lookup(store, body.proof, user)
    usable(store, row, body.serial, user)
    code_id, unit_id, room, _exp, _used, old_fp, r_serial, _until, old_pem = row
    if store.trust.grant(code_id) is not None:
        from cloud_relay.api.trust import check_binding

        if body.binding is None:
            raise refuse(400, "binding_required", "this code was granted by the clinic "
                         "authority: the unit's signing key binding must come with the CSR "
                         "(update scripts/provision)")
        bound = check_binding(store, code_id, unit_id, body.binding)
        if bound.key_id not in {b["key_id"] for b in store.trust.bindings(unit_id)}:
            store.trust.add_binding(unit_id, bound.key_id, body.binding)
            store.audit(user.id, "unit_key_bound", unit_id, {"key_id": bound.key_id,
                                                             "code_id": code_id})
    authority = ca(cfg)
    try:
        csr = x509.load_pem_x509_csr(body.csr_pem.encode())
    except ValueError:
        csr = None
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    cert = None
    if old_pem and r_serial == body.serial and csr is not None:
        previous = x509.load_pem_x509_certificate(old_pem.encode())
        if previous.public_key().public_bytes(*spki) == csr.public_key().public_bytes(*spki):
            cert = previous  # a resumed enrolment with the same key: the same certificate
    if cert is None:
        try:
            cert = pki.sign_csr(authority, body.csr_pem.encode(), unit_id)
        except pki.CSRError as e:
            store.audit(user.id, "enroll_refused", unit_id,
                        {"reason": "bad_csr", "code_id": code_id})
            raise refuse(400, "bad_csr", f"{e}; the code is still valid") from e
    fp = cert.fingerprint(hashes.SHA256()).hex()
    leaf = pki.cert_pem(cert).decode()
    until = now_us() + RESERVATION_TTL_S * 1_000_000
    # reserve atomically: of two units racing for one code, one gets it
    if not store.reserve_enroll_code(code_id, body.serial, user.id, until, fp, leaf):
        raise refuse(409, "enroll_code_reserved", "this enrolment code was just taken by "
                     "another unit", unit=unit_id)
    if fp != old_fp:
        store.audit(user.id, "enroll_reserved", unit_id,
                    {"code_id": code_id, "serial": body.serial, "cert_fingerprint": fp,
                     "cert_serial": format(cert.serial_number, "x")})
    log.info("event=enroll_reserved unit=%s fingerprint=%s", unit_id, fp[:16])
    ca_pem = authority.cert_pem().decode()
    return {"unit": unit_id, "room": room, "cert_pem": leaf, "chain_pem": leaf + ca_pem,
            "ca_pem": ca_pem, "fingerprint_sha256": fp,
            "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds"),
            "code_id": code_id, "reserved_until_us": until}


@router.post("/confirm")
def confirm(body: ConfirmBody, user: InstallerUser, svc: ServicesDep) -> dict:
    """The unit committed the certificate issued under this code: spend the code."""
    store = svc.store
    row = lookup(store, body.proof, user)
    code_id, unit_id, room = row[0], row[1], row[2]
    if not store.spend_enroll_code(code_id, user.id, body.fingerprint_sha256):
        used_us, fp = store.enroll_code_spent(code_id) or (None, None)
        if used_us is not None and fp == body.fingerprint_sha256:
            return {"unit": unit_id, "room": room, "code_id": code_id,
                    "already_confirmed": True}
        store.audit(user.id, "enroll_refused", unit_id,
                    {"reason": "confirm_mismatch", "code_id": code_id})
        raise refuse(409, "enroll_not_reserved", "this code did not issue the unit's "
                     "certificate, so it cannot be confirmed for it", unit=unit_id)
    created = store.ensure_unit(unit_id, room)
    store.audit(user.id, "unit_enrolled", unit_id,
                {"code_id": code_id, "room": room, "cert_fingerprint":
                 body.fingerprint_sha256, "serial": row[6], "new_unit": created})
    log.info("event=unit_enrolled unit=%s fingerprint=%s", unit_id,
             body.fingerprint_sha256[:16])
    if svc.uplink is not None and store.scribes_for(unit_id):
        svc.uplink.publish_assignment(unit_id)  # a re-enrolled unit gets its scribes again
    return {"unit": unit_id, "room": room, "code_id": code_id, "already_confirmed": False}
