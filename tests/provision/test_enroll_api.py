"""The relay's enrolment API (cloud_relay/api/enroll.py) against the real relay process:
codes that carry everything the tech needs, a check that spends nothing, CSR signing
against a reservation, the code spent once at confirm, refusals with clear messages, and
audit entries without codes or proofs."""

from __future__ import annotations

import sqlite3
import time

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scribelink import enrolcode


def csr_for(cn: str, key=None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def code_row(relay, code_id: int) -> tuple:
    db = sqlite3.connect(relay.dir / "data" / "relay.db")
    try:
        return db.execute("SELECT used_us, cert_fingerprint, reserved_serial FROM enroll_codes "
                          "WHERE id=?", (code_id,)).fetchone()
    finally:
        db.close()


def test_check_reserve_confirm_spends_a_code_once(relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    relay.add_user("scribe1", "scribe", "scribe-password-1")
    # no sign-in, no code
    r = httpx.post(relay.url + "/api/enroll/codes", json={"unit": "exam-9", "room": "x"})
    assert r.status_code == 401
    # bad unit ids and reserved names cannot get codes
    for bad in ("relay", "a/b", "+"):
        r = relay.api("POST", "/api/enroll/codes", "tech1", json={"unit": bad, "room": "X"})
        assert r.status_code == 400, bad
    # a code carries what the tech's tool needs: relay, broker, clinic, room, unit
    made = relay.api("POST", "/api/enroll/codes", "tech1",
                     json={"unit": "exam-9", "room": "Exam 9", "clinic": "Northside"}).json()
    code = enrolcode.parse(made["code"])
    assert (code.unit_id, code.room, code.clinic) == ("exam-9", "Exam 9", "Northside")
    assert code.relay_url == relay.url and code.broker_url == broker.url
    assert abs(code.expires_at - made["expires_us"] / 1e6) < 1
    proof, code_id = code.proof(), made["code_id"]

    # a scribe cannot enrol anything
    r = relay.api("POST", "/api/enroll/check", "scribe1", json={"proof": proof, "serial": "A"})
    assert r.status_code == 403

    # a code nobody made
    stranger = enrolcode.EnrolCode.new(relay_url=relay.url, broker_url=broker.url,
                                       clinic="x", room="x", unit_id="exam-9")
    r = relay.api("POST", "/api/enroll/check", "tech1",
                  json={"proof": stranger.proof(), "serial": "A"})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "enroll_code_unknown"

    # check: usable, and nothing changes
    for _ in range(2):
        r = relay.api("POST", "/api/enroll/check", "tech1", json={"proof": proof, "serial": "A"})
        assert r.status_code == 200 and r.json()["status"] == "unspent", r.text
        assert r.json()["unit"] == "exam-9"
    assert code_row(relay, code_id) == (None, None, None)

    # a CSR for another unit id is refused, and does not reserve the code
    r = relay.api("POST", "/api/enroll", "tech1",
                  json={"proof": proof, "serial": "A", "csr_pem": csr_for("exam-1")[1]})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "bad_csr"
    assert "exam-9" in r.json()["detail"]["message"]

    # unit A reserves it: a certificate from the clinic CA, for this key, CN = unit id
    key, csr = csr_for("exam-9")
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "A",
                                                        "csr_pem": csr})
    assert r.status_code == 200, r.text
    issued = r.json()
    cert = x509.load_pem_x509_certificate(issued["cert_pem"].encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(broker.pki["ca"].read_bytes()))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "exam-9"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    used, fp, serial = code_row(relay, code_id)
    assert used is None and fp == issued["fingerprint_sha256"] and serial == "A"  # not spent

    # the same unit again (a resumed enrolment): the same certificate for the same key,
    # a new one for a new key
    r = relay.api("POST", "/api/enroll", "tech1",
                  json={"proof": proof, "serial": "A", "csr_pem": csr_for("exam-9", key)[1]})
    assert r.json()["fingerprint_sha256"] == issued["fingerprint_sha256"]
    assert relay.api("POST", "/api/enroll/check", "tech1",
                     json={"proof": proof, "serial": "A"}).json()["status"] == "reserved_here"

    # unit B meanwhile: refused, and told whose it is
    for path, extra in (("/api/enroll/check", {}), ("/api/enroll", {"csr_pem": csr})):
        r = relay.api("POST", path, "tech1", json={"proof": proof, "serial": "B", **extra})
        assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_code_reserved"
        assert "serial A" in r.json()["detail"]["message"]

    # confirm: only for the certificate issued under the code; then spent, once
    r = relay.api("POST", "/api/enroll/confirm", "tech1",
                  json={"proof": proof, "fingerprint_sha256": "0" * 64})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_not_reserved"
    assert code_row(relay, code_id)[0] is None
    r = relay.api("POST", "/api/enroll/confirm", "tech1",
                  json={"proof": proof, "fingerprint_sha256": issued["fingerprint_sha256"]})
    assert r.status_code == 200 and r.json()["already_confirmed"] is False
    r = relay.api("POST", "/api/enroll/confirm", "tech1",
                  json={"proof": proof, "fingerprint_sha256": issued["fingerprint_sha256"]})
    assert r.status_code == 200 and r.json()["already_confirmed"] is True
    assert code_row(relay, code_id)[0] is not None
    units = {u["id"]: u for u in relay.api("GET", "/api/admin/units").json()}
    assert units["exam-9"]["room"] == "Exam 9"

    # spent
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "A",
                                                        "csr_pem": csr})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_code_used"
    assert "already used" in r.json()["detail"]["message"]

    # the audit log tells the story once, without codes or proofs
    audit = relay.api("GET", "/api/admin/audit").json()
    actions = [a["action"] for a in audit if a.get("detail", {}).get("code_id") == code_id]
    assert actions.count("unit_enrolled") == 1 and actions.count("enroll_reserved") == 1
    text = repr(audit) + (relay.dir / "relay.log").read_text()
    for secret in (made["code"], proof, code.secret.hex()):
        assert secret not in text


def test_a_reservation_never_confirmed_lapses_and_the_code_works_again(relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    short_made = relay.api("POST", "/api/enroll/codes", "admin",
                           json={"unit": "exam-10", "room": "Exam 10", "ttl_s": 1}).json()
    short = short_made["code"]
    made = relay.api("POST", "/api/enroll/codes", "admin",
                     json={"unit": "exam-4", "room": "Exam 4"}).json()
    proof = enrolcode.parse(made["code"]).proof()
    _key, csr = csr_for("exam-4")
    assert relay.api("POST", "/api/enroll", "tech1", json={
        "proof": proof, "serial": "A", "csr_pem": csr}).status_code == 200
    assert relay.api("POST", "/api/enroll/check", "tech1", json={
        "proof": proof, "serial": "B"}).status_code == 409
    # 15 minutes pass without a confirm (the unit rolled back): moved in the relay's database
    db = sqlite3.connect(relay.dir / "data" / "relay.db")
    db.execute("UPDATE enroll_codes SET reserved_until_us=? WHERE id=?",
               (int((time.time() - 1) * 1e6), made["code_id"]))
    db.commit()
    db.close()
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "B",
                                                        "csr_pem": csr_for("exam-4")[1]})
    assert r.status_code == 200, r.text
    assert code_row(relay, made["code_id"])[2] == "B"

    # a code past its time is refused (and one reserved before that could still finish)
    while time.time() < short_made["expires_us"] / 1e6 + 0.1:
        time.sleep(0.1)
    r = relay.api("POST", "/api/enroll/check", "tech1",
                  json={"proof": enrolcode.parse(short).proof(), "serial": "A"})
    assert r.status_code == 410 and r.json()["detail"]["error"] == "enroll_code_expired"
    assert "expired" in r.json()["detail"]["message"]
