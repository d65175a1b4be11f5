"""Unit enrollment against codes the clinic authority granted: checking a code, signing a
unit's CSR against a reservation, and spending the code when the unit has committed
(docs/protocol.md, 10.5; docs/trust.md).

Codes are made only by the clinic's admin with the clinic authority (the authority tool's
`code`, or the admin view): the authority signs a `unit_grant` for one unit id, the code
carries the secret its `code_key` derives from, and the relay gets the grant and SHA-256 of
the code's proof (POST /api/admin/enrolment-grants, cloud_relay/api/trust.py). The relay
never sees the secret, so it can sign a transport certificate but never bind a signing key
to a unit: the tech's tool does that with the code. A relay or a tech account cannot make
a code, and a code made before the unit's last enrolment cannot enrol it again: re-enrolling
an enrolled unit takes a new grant, an admin's explicit approval.

Spending follows the unit's fail-safe, so that a pulled cable never burns a code:
- `check` looks at a code without changing it (pre-checks, before the unit changes), and
  hands the tool the grant, which the tool checks against the authority its code names;
- `enroll` takes the unit's binding (its signing key, signed with the code's key under the
  grant) and signs the CSR (CN = unit id, by the clinic CA) against a *reservation* of the
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

import hashlib
import logging
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from cloud_relay import pki
from cloud_relay.api.deps import ConfigDep, InstallerUser, ServicesDep, refuse
from cloud_relay.config import RelayConfig
from cloud_relay.revocation import transport
from cloud_relay.store import Store, User, now_us
from scribelink import enrolcode

log = logging.getLogger("cloud_relay.enroll")

router = APIRouter(prefix="/api/enroll", tags=["enroll"])

# longer than a unit's fail-safe (scribelink.provisioning.FAILSAFE_MAX_S): a unit that
# commits at the last moment can still be confirmed before anyone else may take the code
RESERVATION_TTL_S = 15 * 60


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
                 "expired: the clinic admin makes a new one for this unit", unit=unit_id)
    if store.trust.grant(code_id) is None:
        raise no(409, "enroll_code_ungranted", "code_ungranted", "this enrolment code was "
                 "made without the clinic authority (by the relay, before the trust root): "
                 "the clinic admin makes a new one with the authority", unit=unit_id)
    made = next((e for e in store.enrolments(unit_id) if e["id"] == code_id), None)
    later = [e["used_us"] for e in store.enrolments(unit_id)
             if e["id"] != code_id and e["used_us"] is not None and made is not None
             and e["used_us"] > made["created_us"]]
    if later:
        raise no(409, "enroll_grant_superseded", "grant_superseded", f"unit {unit_id} was "
                 f"enrolled (at {_when(max(later))}) after this code was made: enrolling it "
                 "again takes a new code, an admin's explicit approval", unit=unit_id)
    return "reserved_here" if reserved_here else "unspent"


@router.post("/check")
def check(body: CheckBody, user: InstallerUser, svc: ServicesDep, cfg: ConfigDep) -> dict:
    """Whether this code can enrol the unit with this serial. Changes nothing."""
    row = lookup(svc.store, body.proof, user)
    status = usable(svc.store, row, body.serial, user, audit=False)
    code_id, unit_id, room, expires_us, *_ = row
    ca_pem = ca(cfg).cert_pem()
    # the grant, for the tool to check against the authority its code names (never against
    # one the relay hands over), and the CA the unit will be asked to pin
    return {"code_id": code_id, "unit": unit_id, "room": room, "expires_us": expires_us,
            "status": status, "reserved_until_us": row[7] if status == "reserved_here"
            else None, "grant": svc.store.trust.grant(code_id),
            "ca_sha256": hashlib.sha256(x509.load_pem_x509_certificate(ca_pem).public_bytes(
                serialization.Encoding.DER)).hexdigest(),
            "enrolled_before": any(e["used_us"] is not None
                                   for e in svc.store.enrolments(unit_id))}


@router.post("")
def enroll(body: EnrollBody, user: InstallerUser, svc: ServicesDep, cfg: ConfigDep) -> dict:
    store = svc.store
    row = lookup(store, body.proof, user)
    usable(store, row, body.serial, user)
    code_id, unit_id, room, _exp, _used, old_fp, r_serial, _until, old_pem = row
    from cloud_relay.api.trust import check_binding

    if body.binding is None:
        raise refuse(400, "binding_required", "this code was granted by the clinic "
                     "authority: the unit's signing key binding must come with the CSR "
                     "(update scripts/provision)")
    bound = check_binding(store, code_id, unit_id, body.binding)
    sign_key_id = bound.key_id  # the unit signing key this certificate goes with
    if bound.key_id not in {b["key_id"] for b in store.trust.bindings(unit_id)}:
        store.trust.add_binding(unit_id, bound.key_id, body.binding)
        store.audit(user.id, "unit_key_bound", unit_id, {"key_id": bound.key_id,
                                                         "key_type": bound.key_type,
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
    transport(svc).issued(cert, unit_id, via="enrol", sign_key_id=sign_key_id)
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
    # the certificates of the unit's earlier enrolments: this one replaces them
    replaced = [e["cert_fingerprint"] for e in store.enrolments(unit_id)
                if e["id"] != code_id and e["used_us"] is not None and e["cert_fingerprint"]]
    store.audit(user.id, "unit_enrolled", unit_id,
                {"code_id": code_id, "room": room, "cert_fingerprint":
                 body.fingerprint_sha256, "serial": row[6], "new_unit": created,
                 "replaces_certificates": replaced})
    log.info("event=unit_enrolled unit=%s fingerprint=%s", unit_id,
             body.fingerprint_sha256[:16])
    # this certificate is the unit's now; any other of the unit id (a re-enrolment) is revoked
    transport(svc).enrolled(unit_id, body.fingerprint_sha256, user.id)
    if svc.uplink is not None and store.scribes_for(unit_id):
        svc.uplink.publish_assignment(unit_id)  # a re-enrolled unit gets its scribes again
    return {"unit": unit_id, "room": room, "code_id": code_id, "already_confirmed": False}
