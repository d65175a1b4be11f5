"""The relay's enrolment API (cloud_relay/api/enroll.py) against the real relay process:
codes made only by the clinic authority (the relay and tech accounts make none), a check
that spends nothing and hands over the grant, CSR signing against a reservation with the
unit's binding, the code spent once at confirm, re-enrolment only under a newer grant,
refusals with clear messages, and audit entries without codes or proofs."""

from __future__ import annotations

import hashlib
import sqlite3
import time

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID
from trustkit import Clinic

from scribelink import enrolcode, trust
from scribelink.authority import bind_unit


def csr_for(cn: str, key=None) -> tuple[ec.EllipticCurvePrivateKey, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
           .sign(key, hashes.SHA256()))
    return key, csr.public_bytes(serialization.Encoding.PEM).decode()


def binding_for(code_text: str, grant: dict, key: Ed25519PrivateKey | None = None) -> dict:
    """What the tech's tool signs with the code: the unit's signing key under the grant."""
    code = enrolcode.parse(code_text)
    key = key or Ed25519PrivateKey.generate()
    return bind_unit(trust.Statement.from_dict(grant), code.secret, trust.ed25519_raw(key),
                     time.time_ns() // 1000).to_dict()


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
    clinic = Clinic()
    # nobody but the clinic authority makes codes: the relay's own code-making is gone
    for uid in ("tech1", "admin"):
        r = relay.api("POST", "/api/enroll/codes", uid, json={"unit": "exam-9", "room": "X"})
        assert r.status_code in (404, 405), r.text
    grant, secret = clinic.authority.grant(unit="exam-9", room="X", clinic="N", now_us=1)
    clinic.register(relay)
    r = relay.api("POST", "/api/admin/enrolment-grants", "tech1", json={
        "grant": grant.to_dict(), "proof_hash": "0" * 64})
    assert r.status_code == 403  # a tech account cannot grant an enrolment
    # a grant another authority signed, or for a reserved name, is refused
    for bad_clinic, unit in ((Clinic(), "exam-9"), (clinic, "relay"), (clinic, "a/b")):
        g, _s = bad_clinic.authority.grant(unit=unit, room="X", clinic="N",
                                           now_us=time.time_ns() // 1000)
        r = relay.api("POST", "/api/admin/enrolment-grants", "admin", json={
            "grant": g.to_dict(), "proof_hash": "0" * 64})
        assert r.status_code == 400, (unit, r.text)
    # a code carries what the tech's tool needs: relay, broker, clinic, room, unit, authority
    text, code_id = clinic.enrolment_code(relay, "exam-9", "Exam 9", clinic="Northside")
    code = enrolcode.parse(text)
    assert (code.unit_id, code.room, code.clinic) == ("exam-9", "Exam 9", "Northside")
    assert code.relay_url == relay.url and code.broker_url == broker.url
    assert code.authority == clinic.authority.public_raw
    proof = code.proof()

    # a scribe cannot enrol anything
    r = relay.api("POST", "/api/enroll/check", "scribe1", json={"proof": proof, "serial": "A"})
    assert r.status_code == 403

    # a code nobody made
    stranger = enrolcode.EnrolCode.new(relay_url=relay.url, broker_url=broker.url,
                                       clinic="x", room="x", unit_id="exam-9")
    r = relay.api("POST", "/api/enroll/check", "tech1",
                  json={"proof": stranger.proof(), "serial": "A"})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "enroll_code_unknown"

    # check: usable, and nothing changes; the grant comes with it (the tool checks it
    # against the authority its code names)
    for _ in range(2):
        r = relay.api("POST", "/api/enroll/check", "tech1", json={"proof": proof, "serial": "A"})
        assert r.status_code == 200 and r.json()["status"] == "unspent", r.text
        assert r.json()["unit"] == "exam-9" and r.json()["enrolled_before"] is False
    assert code_row(relay, code_id) == (None, None, None)
    grant = r.json()["grant"]
    assert trust.Statement.from_dict(grant).verify(clinic.public, t=trust.GRANT)["unit"] == \
        "exam-9"
    ca_der = x509.load_pem_x509_certificate(broker.pki["ca"].read_bytes()).public_bytes(
        serialization.Encoding.DER)
    assert r.json()["ca_sha256"] == hashlib.sha256(ca_der).hexdigest()

    # no binding, or one the code's key did not sign (what a relay could make): refused
    _key, csr = csr_for("exam-9")
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "A",
                                                        "csr_pem": csr})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "binding_required"
    forged = trust.sign(trust.BINDING, trust.binding_body(
        grant=trust.Statement.from_dict(grant), sign_key=trust.ed25519_raw(
            Ed25519PrivateKey.generate()), issued_us=1), Ed25519PrivateKey.generate())
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "A",
                                                        "csr_pem": csr,
                                                        "binding": forged.to_dict()})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "bad_binding"
    assert code_row(relay, code_id) == (None, None, None)
    binding = binding_for(text, grant)

    # a CSR for another unit id is refused, and does not reserve the code
    r = relay.api("POST", "/api/enroll", "tech1",
                  json={"proof": proof, "serial": "A", "csr_pem": csr_for("exam-1")[1],
                        "binding": binding})
    assert r.status_code == 400 and r.json()["detail"]["error"] == "bad_csr"
    assert "exam-9" in r.json()["detail"]["message"]

    # unit A reserves it: a certificate from the clinic CA, for this key, CN = unit id
    key, csr = csr_for("exam-9")
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "A",
                                                        "csr_pem": csr, "binding": binding})
    assert r.status_code == 200, r.text
    issued = r.json()
    bound = trust.verify_binding(clinic.public, binding)
    assert [b["key_id"] for b in relay.api("GET", "/api/admin/units/exam-9/bindings").json()] \
        == [bound.key_id]
    cert = x509.load_pem_x509_certificate(issued["cert_pem"].encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(broker.pki["ca"].read_bytes()))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "exam-9"
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    used, fp, serial = code_row(relay, code_id)
    assert used is None and fp == issued["fingerprint_sha256"] and serial == "A"  # not spent

    # the same unit again (a resumed enrolment): the same certificate for the same key,
    # a new one for a new key
    r = relay.api("POST", "/api/enroll", "tech1",
                  json={"proof": proof, "serial": "A", "csr_pem": csr_for("exam-9", key)[1],
                        "binding": binding})
    assert r.json()["fingerprint_sha256"] == issued["fingerprint_sha256"]
    assert relay.api("POST", "/api/enroll/check", "tech1",
                     json={"proof": proof, "serial": "A"}).json()["status"] == "reserved_here"

    # unit B meanwhile: refused, and told whose it is
    for path, extra in (("/api/enroll/check", {}), ("/api/enroll", {"csr_pem": csr,
                                                                     "binding": binding})):
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
                                                        "csr_pem": csr, "binding": binding})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_code_used"
    assert "already used" in r.json()["detail"]["message"]

    # the audit log tells the story once, without codes or proofs
    audit = relay.api("GET", "/api/admin/audit").json()
    actions = [a["action"] for a in audit if a.get("detail", {}).get("code_id") == code_id]
    assert actions.count("unit_enrolled") == 1 and actions.count("enroll_reserved") == 1
    text = repr(audit) + (relay.dir / "relay.log").read_text()
    for secret in (text_of(code), proof, code.secret.hex()):
        assert secret not in text


def text_of(code: enrolcode.EnrolCode) -> str:
    return code.text()


def test_re_enrolling_an_enrolled_unit_takes_a_grant_made_after_its_enrolment(relay, broker):
    """A tech account cannot re-enrol an enrolled unit id on its own: the spent code is
    refused, and so is a code the admin made before the unit's last enrolment (an old
    grant, still unspent); a code made after it (the admin's explicit approval) works."""
    relay.add_user("tech1", "tech", "tech-password-1")
    clinic = Clinic()
    old_text, old_id = clinic.enrolment_code(relay, "exam-5", "Exam 5")
    first_text, _ = clinic.enrolment_code(relay, "exam-5", "Exam 5")

    def enrol(text: str, serial: str) -> httpx.Response:
        return enrol_at_relay(relay, text, serial, "exam-5")

    assert enrol(first_text, "A").status_code == 200
    r = enrol(first_text, "A")
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_code_used"
    r = enrol(old_text, "A")
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_grant_superseded"
    assert "explicit approval" in r.json()["detail"]["message"]
    assert code_row(relay, old_id)[0] is None
    new_text, _ = clinic.enrolment_code(relay, "exam-5", "Exam 5")
    r = relay.api("POST", "/api/enroll/check", "tech1", json={
        "proof": enrolcode.parse(new_text).proof(), "serial": "B"})
    assert r.status_code == 200 and r.json()["enrolled_before"] is True
    assert enrol(new_text, "B").status_code == 200
    audit = [a for a in relay.api("GET", "/api/admin/audit").json()
             if a["action"] == "unit_enrolled" and a["target"] == "exam-5"]
    assert len(audit) == 2
    replaced = [a["detail"]["replaces_certificates"] for a in audit]
    assert sorted(len(x) for x in replaced) == [0, 1]
    # a code row made before the trust root (no grant) enrols nothing
    db = sqlite3.connect(relay.dir / "data" / "relay.db")
    legacy = enrolcode.EnrolCode.new(relay_url=relay.url, broker_url=broker.url, clinic="x",
                                     room="x", unit_id="exam-6")
    db.execute("INSERT INTO enroll_codes(code_hash,unit_id,room,created_by,created_us,"
               "expires_us) VALUES(?,?,?,?,?,?)", (enrolcode.proof_hash(legacy.proof()),
                                                   "exam-6", "x", "admin", 1, 2**62))
    db.commit()
    db.close()
    r = relay.api("POST", "/api/enroll/check", "tech1", json={"proof": legacy.proof(),
                                                              "serial": "C"})
    assert r.status_code == 409 and r.json()["detail"]["error"] == "enroll_code_ungranted"


def enrol_at_relay(relay, text: str, serial: str, unit: str) -> httpx.Response:
    """What the tool asks of the relay for one enrolment: check, enroll (with the binding),
    confirm; -> the confirm's (or the first refusal's) response."""
    proof = enrolcode.parse(text).proof()
    r = relay.api("POST", "/api/enroll/check", "tech1", json={"proof": proof, "serial": serial})
    if r.status_code != 200:
        return r
    r = relay.api("POST", "/api/enroll", "tech1", json={
        "proof": proof, "serial": serial, "csr_pem": csr_for(unit)[1],
        "binding": binding_for(text, r.json()["grant"])})
    assert r.status_code == 200, r.text
    return relay.api("POST", "/api/enroll/confirm", "tech1", json={
        "proof": proof, "fingerprint_sha256": r.json()["fingerprint_sha256"]})


def test_token_requests_carry_exactly_what_the_admin_signs(relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    relay.add_user("tech2", "tech", "tech-password-2")
    clinic = Clinic()
    text, _ = clinic.enrolment_code(relay, "exam-8", "Exam 8")
    ask = {"unit": "exam-8", "action": "set_trust",
           "args": {"broker_url": "mqtts://broker2.clinic:8883"}}
    r = relay.api("POST", "/api/enroll/token-requests", "tech1", json=ask)
    assert r.status_code == 404  # a unit the relay does not know (not enrolled yet)
    assert enrol_at_relay(relay, text, "A", "exam-8").status_code == 200
    for bad in ({**ask, "args": {"room": "x"}}, {**ask, "args": {}},
                {"unit": "exam-8", "action": "unlock", "args": {"x": "y"}},
                {"unit": "exam-8", "action": "take_over"}):
        r = relay.api("POST", "/api/enroll/token-requests", "tech1", json=bad)
        assert r.status_code in (400, 422), (bad, r.text)
    rid = relay.api("POST", "/api/enroll/token-requests", "tech1", json=ask).json()["request"]
    got = relay.api("GET", f"/api/enroll/token-requests/{rid}", "tech1").json()
    assert got["signed"] is False and got["token"] is None
    assert relay.api("GET", f"/api/enroll/token-requests/{rid}", "tech2").status_code == 404
    # the admin's signature must be the authority's, over exactly what was asked
    for wrong in (clinic.token("exam-8", "set_trust", args={"broker_url": "mqtts://e:1"}),
                  clinic.token("exam-9", "set_trust", args=ask["args"]),
                  Clinic().token("exam-8", "set_trust", args=ask["args"])):
        r = relay.api("POST", f"/api/admin/token-requests/{rid}", "admin",
                      json={"statement": wrong})
        assert r.status_code == 400, r.text
    st = clinic.sign_token_request(relay, rid)
    got = relay.api("GET", f"/api/enroll/token-requests/{rid}", "tech1").json()
    assert got["signed"] is True and got["token"] == st
    assert trust.verify_token(clinic.public, got["token"], unit="exam-8", action="set_trust",
                              now_us=time.time_ns() // 1000, used=set())["args"] == ask["args"]
    r = relay.api("POST", f"/api/admin/token-requests/{rid}", "admin", json={"statement": st})
    assert r.status_code == 409


def test_a_reservation_never_confirmed_lapses_and_the_code_works_again(relay, broker):
    relay.add_user("tech1", "tech", "tech-password-1")
    clinic = Clinic()
    short, _short_id = clinic.enrolment_code(relay, "exam-10", "Exam 10", ttl_s=1)
    # the code's expiry is in whole seconds, taken just after the grant's: past it by a
    # second, the grant has expired too
    short_expires_us = (enrolcode.parse(short).expires_at + 1) * 1_000_000
    text, code_id = clinic.enrolment_code(relay, "exam-4", "Exam 4")
    made = {"code_id": code_id}
    proof = enrolcode.parse(text).proof()
    grant = relay.api("POST", "/api/enroll/check", "tech1", json={"proof": proof,
                                                                  "serial": "A"}).json()["grant"]
    binding = binding_for(text, grant)
    _key, csr = csr_for("exam-4")
    assert relay.api("POST", "/api/enroll", "tech1", json={
        "proof": proof, "serial": "A", "csr_pem": csr, "binding": binding}).status_code == 200
    assert relay.api("POST", "/api/enroll/check", "tech1", json={
        "proof": proof, "serial": "B"}).status_code == 409
    # 15 minutes pass without a confirm (the unit rolled back): moved in the relay's database
    db = sqlite3.connect(relay.dir / "data" / "relay.db")
    db.execute("UPDATE enroll_codes SET reserved_until_us=? WHERE id=?",
               (int((time.time() - 1) * 1e6), made["code_id"]))
    db.commit()
    db.close()
    r = relay.api("POST", "/api/enroll", "tech1", json={"proof": proof, "serial": "B",
                                                        "csr_pem": csr_for("exam-4")[1],
                                                        "binding": binding})
    assert r.status_code == 200, r.text
    assert code_row(relay, made["code_id"])[2] == "B"

    # a code past its time is refused (and one reserved before that could still finish)
    while time.time() < short_expires_us / 1e6 + 0.1:
        time.sleep(0.1)
    r = relay.api("POST", "/api/enroll/check", "tech1",
                  json={"proof": enrolcode.parse(short).proof(), "serial": "A"})
    assert r.status_code == 410 and r.json()["detail"]["error"] == "enroll_code_expired"
    assert "expired" in r.json()["detail"]["message"]
