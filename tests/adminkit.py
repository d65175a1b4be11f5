"""A clinic admin for tests: enrol a unit through the relay's real enrolment API with a
code the clinic authority granted (what the tech's tool does), and sign as the authority."""

from __future__ import annotations

import hashlib
import time

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from scribelink import enrolcode, trust
from scribelink.authority import ClinicAuthority, bind_unit


def now_us() -> int:
    return time.time_ns() // 1000


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def enrol_with_secret(url: str, tech_token: str, grant: dict, secret: bytes, unit: str,
                      *, serial: str = "SN-0001", verify=True) -> dict:
    """The tech's side of an enrolment: a fresh unit key and signing key, the binding
    signed with the code's key, the CSR signed, the code spent. -> cert, key id."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, unit)]))
           .sign(key, hashes.SHA256()))
    sign_key = Ed25519PrivateKey.generate()
    binding = bind_unit(trust.Statement.from_dict(grant), secret,
                        trust.ed25519_raw(sign_key), now_us())
    proof = enrolcode.proof_of(secret)
    h = bearer(tech_token)
    r = httpx.post(url + "/api/enroll", headers=h, verify=verify, timeout=20, json={
        "proof": proof, "serial": serial,
        "csr_pem": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "binding": binding.to_dict()})
    r.raise_for_status()
    got = r.json()
    r = httpx.post(url + "/api/enroll/confirm", headers=h, verify=verify, timeout=20,
                   json={"proof": proof, "fingerprint_sha256": got["fingerprint_sha256"]})
    r.raise_for_status()
    cert = x509.load_pem_x509_certificate(got["cert_pem"].encode())
    return {"cert": cert, "key_id": trust.key_id(trust.ed25519_raw(sign_key)),
            "fingerprint": hashlib.sha256(cert.public_bytes(
                serialization.Encoding.DER)).hexdigest()}


def grant_code(relay, auth: ClinicAuthority, unit: str, room: str) -> tuple[dict, bytes]:
    """The admin's side: a grant signed by the authority, its proof hash given to the relay."""
    from scribelink.authority_cli import grant_request

    request, secret = grant_request(auth, unit, room, "Test Clinic", 3600)
    r = relay.api("POST", "/api/admin/enrolment-grants", json=request)
    r.raise_for_status()
    return request["grant"], secret


def register_authority(relay) -> ClinicAuthority:
    auth = ClinicAuthority.create()
    relay.api("PUT", "/api/admin/authority", json={"public_key": auth.public_b64()}
              ).raise_for_status()
    return auth
