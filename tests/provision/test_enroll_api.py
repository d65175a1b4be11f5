"""The relay's enrollment API (cloud_relay/enroll.py) against the real relay process:
one-time codes, CSR signing by the clinic CA, refusals with clear messages, audit
entries without codes."""

from __future__ import annotations

import time

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def csr_for(cn: str) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def test_codes_are_one_time_expire_and_bind_the_unit_id(relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    relay.add_user("scribe1", "scribe", "scribe-password-1")
    made = relay.api("POST", "/api/enroll/codes", "tech1", json={"unit": "exam-9", "room": "Exam 9"})
    assert made.status_code == 200, made.text
    code = made.json()["code"]
    assert len(code.replace("-", "")) == 20

    # a scribe cannot enroll anything
    r = relay.api("POST", "/api/enroll", "scribe1", json={"code": code, "csr_pem": csr_for("exam-9")[1]})
    assert r.status_code == 403

    # wrong code
    r = relay.api("POST", "/api/enroll", "tech1",
                  json={"code": "AAAAA-BBBBB-CCCCC-DDDDD", "csr_pem": csr_for("exam-9")[1]})
    assert r.status_code == 400
    assert r.json()["detail"]["error"] == "enroll_code_unknown"
    assert "does not exist" in r.json()["detail"]["message"]

    # a CSR for another unit id is refused, and does not burn the code
    r = relay.api("POST", "/api/enroll", "tech1", json={"code": code, "csr_pem": csr_for("exam-1")[1]})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "bad_csr"
    assert "exam-9" in r.json()["detail"]["message"]

    # the right CSR: a certificate from the clinic CA, for this key, CN = unit id
    key, csr = csr_for("exam-9")
    r = relay.api("POST", "/api/enroll", "tech1", json={"code": code.lower(), "csr_pem": csr})
    assert r.status_code == 200, r.text
    cert = x509.load_pem_x509_certificate(r.json()["cert_pem"].encode())
    ca = x509.load_pem_x509_certificate(broker.pki["ca"].read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "exam-9"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert r.json()["room"] == "Exam 9"
    units = {u["id"]: u for u in relay.api("GET", "/api/admin/units").json()}
    assert units["exam-9"]["room"] == "Exam 9"

    # reused
    r = relay.api("POST", "/api/enroll", "tech1", json={"code": code, "csr_pem": csr_for("exam-9")[1]})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_code_used"
    assert "already used" in r.json()["detail"]["message"]

    # expired
    short = relay.api("POST", "/api/enroll/codes", "admin",
                      json={"unit": "exam-10", "room": "Exam 10", "ttl_s": 1}).json()["code"]
    time.sleep(1.3)
    r = relay.api("POST", "/api/enroll", "tech1", json={"code": short, "csr_pem": csr_for("exam-10")[1]})
    assert r.status_code == 410 and r.json()["detail"]["error"] == "enroll_code_expired"
    assert "expired" in r.json()["detail"]["message"]

    # bad unit ids and reserved names cannot get codes
    for bad in ("relay", "a/b", "+"):
        r = relay.api("POST", "/api/enroll/codes", "tech1", json={"unit": bad, "room": "X"})
        assert r.status_code == 400, bad

    # the audit log tells the story, without the codes
    audit = relay.api("GET", "/api/admin/audit").json()
    actions = [a["action"] for a in audit]
    assert "unit_enrolled" in actions and actions.count("enroll_refused") >= 4
    text = repr(audit) + (relay.dir / "relay.log").read_text()
    for secret in (code, short, code.replace("-", ""), short.replace("-", "")):
        assert secret not in text


def test_no_token_no_code(relay):
    r = httpx.post(relay.url + "/api/enroll/codes", json={"unit": "exam-9", "room": "x"})
    assert r.status_code == 401
