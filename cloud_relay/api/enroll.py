"""Unit enrolment: one-time enrolment codes and the CSR signing endpoint.

An admin or tech creates a code for a unit id and room; it is shown once, stored as a
SHA-256 hash (codes carry 100 random bits, so a plain hash is enough), expires (1 h by
default) and works once. A tech redeems it with the CSR the unit made from a key that
never left it; the clinic CA signs it with CN = unit id. The broker's ACL `pattern`
rules key on the certificate CN, so the new unit can use its own topics and nothing else
without any broker change. Codes, passwords and keys never reach the audit log.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from fastapi import APIRouter
from pydantic import BaseModel, Field

from cloud_relay import pki
from cloud_relay.api.deps import ConfigDep, InstallerUser, ServicesDep, refuse
from cloud_relay.config import RelayConfig
from cloud_relay.store import now_us
from scribelink import topics

log = logging.getLogger("cloud_relay.enroll")

router = APIRouter(prefix="/api/enroll", tags=["enroll"])

DEFAULT_TTL_S = 3600
MAX_TTL_S = 7 * 24 * 3600
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud, typed by hand


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(20))  # 20 x 5 bits
    return "-".join(raw[i:i + 5] for i in range(0, 20, 5))


def normalize(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def code_hash(code: str) -> str:
    return hashlib.sha256(normalize(code).encode()).hexdigest()


class CodeBody(BaseModel):
    unit: str = Field(max_length=64)
    room: str = Field(min_length=1, max_length=128)
    ttl_s: int = Field(default=DEFAULT_TTL_S, ge=1, le=MAX_TTL_S)


class EnrollBody(BaseModel):
    code: str = Field(max_length=64)
    csr_pem: str = Field(max_length=8192)


def ca(cfg: RelayConfig) -> pki.CA:
    if not cfg.ca_cert_file or not cfg.ca_key_file:
        raise refuse(503, "enrollment_disabled", "this relay has no enrollment CA: set "
                     "ca_cert_file and ca_key_file in its config")
    return pki.CA.load(Path(cfg.ca_cert_file), Path(cfg.ca_key_file))


@router.post("/codes")
def create_code(body: CodeBody, user: InstallerUser, svc: ServicesDep, cfg: ConfigDep) -> dict:
    if not topics.valid_unit_id(body.unit) or body.unit in pki.RESERVED_CNS:
        raise refuse(400, "bad_unit_id", "unit id: letters, digits, '.', '_', '-' only "
                     "(not relay/broker/admin)")
    ca(cfg)  # refuse now, not when the tech is standing at the unit
    code = new_code()
    expires = now_us() + body.ttl_s * 1_000_000
    code_id = svc.store.add_enroll_code(code_hash(code), body.unit, body.room, user.id, expires)
    svc.store.audit(user.id, "enroll_code_created", body.unit,
                    {"code_id": code_id, "room": body.room, "ttl_s": body.ttl_s})
    return {"code": code, "unit": body.unit, "room": body.room, "expires_us": expires,
            "code_id": code_id}


@router.post("")
def enroll(body: EnrollBody, user: InstallerUser, svc: ServicesDep, cfg: ConfigDep) -> dict:
    store = svc.store
    row = store.enroll_code(code_hash(body.code))
    if row is None:
        store.audit(user.id, "enroll_refused", None, {"reason": "unknown_code"})
        raise refuse(400, "enroll_code_unknown", "this enrollment code does not exist: "
                     "check it was typed correctly, or create a new one")
    code_id, unit_id, room, expires_us, used_us = row
    if used_us is not None:
        store.audit(user.id, "enroll_refused", unit_id,
                    {"reason": "code_used", "code_id": code_id})
        raise refuse(409, "enroll_code_used", "this enrollment code was already used: "
                     "codes work once; create a new one for this unit")
    if expires_us < now_us():
        store.audit(user.id, "enroll_refused", unit_id,
                    {"reason": "code_expired", "code_id": code_id})
        raise refuse(410, "enroll_code_expired", "this enrollment code has expired: "
                     "create a new one for this unit")
    authority = ca(cfg)
    try:
        cert = pki.sign_csr(authority, body.csr_pem.encode(), unit_id)
    except pki.CSRError as e:
        store.audit(user.id, "enroll_refused", unit_id, {"reason": "bad_csr", "code_id": code_id})
        raise refuse(400, "bad_csr", f"{e}; the code is still valid") from e
    fp = cert.fingerprint(hashes.SHA256()).hex()
    # spend the code only now, atomically: two techs racing get one certificate
    if not store.spend_enroll_code(code_id, user.id, fp):
        raise refuse(409, "enroll_code_used", "this enrollment code was already used")
    created = store.ensure_unit(unit_id, room)
    store.audit(user.id, "unit_enrolled", unit_id,
                {"code_id": code_id, "room": room, "cert_fingerprint": fp,
                 "cert_serial": format(cert.serial_number, "x"), "new_unit": created})
    log.info("event=unit_enrolled unit=%s fingerprint=%s", unit_id, fp[:16])
    if svc.uplink is not None and store.scribes_for(unit_id):
        svc.uplink.publish_assignment(unit_id)  # a re-enrolled unit gets its scribes again
    leaf = pki.cert_pem(cert).decode()
    ca_pem = authority.cert_pem().decode()
    return {"unit": unit_id, "room": room, "cert_pem": leaf, "chain_pem": leaf + ca_pem,
            "ca_pem": ca_pem, "fingerprint_sha256": fp,
            "not_after": cert.not_valid_after_utc.isoformat(timespec="seconds")}
