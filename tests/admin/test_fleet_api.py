"""The clinic admin's API against the real relay (its own process, a real broker): rooms;
a unit pre-registered, enrolled with an authority-granted code through the enrolment
API, seen with its certificate's expiry, then revoked -- the revocation list must name
its signing key, and the broker's revocation list gets its certificate; people who still
hear a room or hold endorsed devices cannot be removed; disabled accounts cannot sign in;
the archive's retention and purge; alerts from unit status."""

from __future__ import annotations

import json

import httpx
from adminkit import enrol_with_secret, grant_code, now_us, register_authority
from cryptography import x509
from support import UnitPublisher, make_relay, wait_for

from cloud_relay import pki
from scribelink import trust


def audit_actions(relay, **q) -> list[str]:
    return [a["action"] for a in relay.api("GET", "/api/admin/audit",
                                           params={"limit": 500, **q}).json()]


def test_rooms_are_added_renamed_and_removed_when_empty(relay):
    assert relay.api("POST", "/api/admin/rooms", json={"name": "Exam 3"}).status_code == 200
    assert relay.api("POST", "/api/admin/rooms", json={"name": "Exam 3"}).status_code == 409
    assert relay.api("POST", "/api/admin/units", json={"id": "unit-3", "room": "Exam 3"}
                     ).json()["created"] is True
    assert relay.api("DELETE", "/api/admin/rooms/Exam 3").status_code == 409  # unit in it
    assert relay.api("PATCH", "/api/admin/rooms/Exam 3", json={"name": "Exam 3A"}
                     ).status_code == 200
    assert relay.api("GET", "/api/admin/rooms").json() == [
        {"name": "Exam 3A", "created_us": relay.api("GET", "/api/admin/rooms").json()[0][
            "created_us"], "units": ["unit-3"]}]
    assert relay.api("PATCH", "/api/admin/units/unit-3", json={"room": "Nowhere"}
                     ).status_code == 404
    assert relay.api("PATCH", "/api/admin/units/unit-3", json={"room": ""}).status_code == 200
    assert relay.api("DELETE", "/api/admin/rooms/Exam 3A").status_code == 200
    assert {"room_created", "unit_registered", "room_renamed", "unit_moved",
            "room_removed"} <= set(audit_actions(relay))


def test_a_unit_is_enrolled_seen_and_revoked_down_to_the_broker_crl(broker, tmp_path):
    crl = broker.pki["crl"]  # the broker's CRL, which the relay rewrites
    relay = make_relay(tmp_path, broker)
    try:
        relay.add_user("tech1", "tech", "tech-password-1")
        auth = register_authority(relay)
        relay.api("POST", "/api/admin/units", json={"id": "exam-1", "room": "Exam 1"})
        fleet = {u["id"]: u for u in relay.api("GET", "/api/admin/fleet").json()}
        assert fleet["exam-1"]["enrolled_us"] is None and fleet["exam-1"]["codes"] == []
        grant, secret = grant_code(relay, auth, "exam-1", "Exam 1")
        assert len(relay.api("GET", "/api/admin/fleet").json()[0]["codes"]) == 1
        got = enrol_with_secret(relay.url, relay.token("tech1"), grant, secret, "exam-1")
        u = relay.api("GET", "/api/admin/fleet").json()[0]
        days = (u["cert_not_after_us"] - now_us()) / 86400e6
        assert pki.UNIT_CERT_DAYS - 1 < days <= pki.UNIT_CERT_DAYS
        assert u["enrolled_by"] == "tech1" and u["codes"] == []
        assert u["bindings"] == [got["key_id"]] and u["revoked_us"] is None

        # a list that does not name the unit's signing key is refused: the unit would stay
        cur = {"serial": 0, "units": [], "devices": []}
        bad = auth.revocations(serial=1, units=[], devices=[], now_us=now_us())
        r = relay.api("POST", "/api/admin/units/exam-1/revoke", json={"statement": bad.to_dict()})
        assert r.status_code == 400 and r.json()["detail"]["keys"] == [got["key_id"]]
        st = auth.revocations(serial=cur["serial"] + 1, units=[
            {"unit": "exam-1", "sign_key_id": got["key_id"], "after_us": now_us()}],
            devices=[], now_us=now_us())
        r = relay.api("POST", "/api/admin/units/exam-1/revoke", json={"statement": st.to_dict()})
        assert r.json() == {"ok": True, "serial": 1, "crl_updated": True}
        u = relay.api("GET", "/api/admin/fleet").json()[0]
        assert u["revoked_us"] and u["revoked_by"] == "admin"
        rv = trust.verify_revocations(auth.key.public_key(),
                                      relay.api("GET", "/api/trust").json()["revocations"])
        assert rv.unit_revoked("exam-1", got["key_id"], now_us())
        listed = x509.load_pem_x509_crl(crl.read_bytes())
        assert listed.get_revoked_certificate_by_serial_number(got["cert"].serial_number)
        assert listed.is_signature_valid(x509.load_pem_x509_certificate(
            broker.pki["ca"].read_bytes()).public_key())
        assert "unit_revoked" in audit_actions(relay, target="exam-1")
        # an old list cannot be replayed over the new one
        r = relay.api("POST", "/api/admin/units/exam-1/revoke", json={"statement": st.to_dict()})
        assert r.status_code == 409
        # re-enrolment takes a new code the authority grants; then it is not revoked
        grant, secret = grant_code(relay, auth, "exam-1", "Exam 1")
        enrol_with_secret(relay.url, relay.token("tech1"), grant, secret, "exam-1",
                          serial="SN-0002")
        assert relay.api("GET", "/api/admin/fleet").json()[0]["revoked_us"] is None
    finally:
        relay.stop()


def test_people_who_can_still_hear_a_room_cannot_be_removed(relay):
    auth = register_authority(relay)
    relay.add_user("s1", "scribe", "s1-password-1")
    relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam A"})
    # s1's device, endorsed by the authority, and an assignment naming s1
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from scribelink import envelope as env

    enc, sign = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    r = relay.api("PUT", "/api/me/device", uid="s1", json={
        "enc_key": trust.b64(env.public_key_raw(enc)), "sign_key": trust.b64(
            trust.ed25519_raw(sign)), "label": "laptop"})
    device = r.json()["device"]
    st = auth.endorse_device(scribe="s1", enc_key=env.public_key_raw(enc),
                             sign_key=trust.ed25519_raw(sign), label="laptop", now_us=now_us())
    relay.api("POST", "/api/admin/endorsements", json={"statement": st.to_dict()}
              ).raise_for_status()
    relay.api("PUT", "/api/admin/assignments", json={"statement": auth.assign(
        unit="unit-a", room="Exam A", scribes=["s1"], now_us=now_us()).to_dict()}
    ).raise_for_status()
    person = next(p for p in relay.api("GET", "/api/admin/people").json() if p["id"] == "s1")
    assert person["units"] == ["unit-a"] and person["devices"][0]["endorsed"]
    r = relay.api("DELETE", "/api/admin/users/s1")
    assert r.status_code == 409 and r.json()["detail"]["error"] == "still_assigned"
    assert relay.api("PUT", "/api/admin/users/s1/role", json={"role": "tech"}).status_code == 409
    relay.api("PUT", "/api/admin/assignments", json={"statement": auth.assign(
        unit="unit-a", room="Exam A", scribes=[], now_us=now_us()).to_dict()}
    ).raise_for_status()
    r = relay.api("DELETE", "/api/admin/users/s1")
    assert r.status_code == 409 and r.json()["detail"]["devices"] == [device]
    relay.api("PUT", "/api/admin/revocations", json={"statement": auth.revocations(
        serial=1, units=[], devices=[device], now_us=now_us()).to_dict()}).raise_for_status()
    person = next(p for p in relay.api("GET", "/api/admin/people").json() if p["id"] == "s1")
    assert person["devices"][0]["revoked"] is True
    assert relay.api("DELETE", "/api/admin/users/s1").status_code == 200
    assert relay.api("DELETE", "/api/admin/users/admin").status_code == 409  # not oneself
    assert "user_removed" in audit_actions(relay, target="s1")


def test_a_disabled_account_cannot_sign_in_until_enabled(relay):
    relay.add_user("s1", "scribe", "s1-password-1")
    token = relay.token("s1")
    assert relay.api("POST", "/api/admin/users/s1/disable").status_code == 200
    assert httpx.get(relay.url + "/api/me",
                     headers={"Authorization": f"Bearer {token}"}).status_code == 401
    r = httpx.post(relay.url + "/api/login", json={"user": "s1", "password": "s1-password-1"})
    assert r.status_code == 403 and "disabled" in r.json()["detail"]["message"]
    relay.api("POST", "/api/admin/users/s1/enable")
    assert relay.token("s1")
    assert relay.api("POST", "/api/admin/users/admin/disable").status_code == 409


def test_retention_is_the_admins_and_a_purge_runs_now(relay):
    assert relay.api("GET", "/api/admin/archive").json()["retention_days"] == 7.0
    assert relay.api("PUT", "/api/admin/archive/retention", json={"days": 2.5}
                     ).status_code == 200
    assert relay.api("GET", "/api/admin/archive").json()["retention_days"] == 2.5
    assert relay.api("PUT", "/api/admin/archive/retention", json={"days": 0}
                     ).status_code == 422
    r = relay.api("POST", "/api/admin/archive/purge", json={"older_than_days": 0})
    assert r.json() == {"ok": True, "sessions": 0}
    changed = relay.api("GET", "/api/admin/audit", params={"action": "retention_changed"}
                        ).json()[0]
    assert changed["detail"] == {"from": 7.0, "to": 2.5}
    assert "archive_purged" in audit_actions(relay)


def test_alerts_come_from_unit_status(broker, relay):
    relay.api("POST", "/api/admin/units", json={"id": "unit-a", "room": "Exam A"})
    unit = UnitPublisher(broker, "unit-a")
    try:
        unit.publish("status", json.dumps({
            "v": 1, "type": "status", "unit": "unit-a", "at_us": now_us(), "link": "up",
            "capture": "live", "spool": {"records": 9000, "seconds": 1200.0},
            "mics": {"dead": [1]}, "version": "1.2.3"}).encode())
        got = wait_for(lambda: {a["kind"] for a in relay.api("GET", "/api/admin/alerts").json()}
                       >= {"spool_filling", "mic_dead"} and relay.api(
                           "GET", "/api/admin/alerts").json(), what="alerts")
        spool = next(a for a in got if a["kind"] == "spool_filling")
        assert spool["room"] == "Exam A" and "20 min" in spool["message"]
        assert relay.api("GET", "/api/admin/fleet").json()[0]["version"] == "1.2.3"
    finally:
        unit.close()
