"""The unit's trust anchors and tokens, in process over a real state dir with real keys,
certificates and signed statements (docs/trust.md): the unit checks its key binding itself,
pins the clinic authority, CA, broker and recovery key where factory reset cannot reach,
and unlocks, resets, changes an anchor or lets go of its clinic only with a one-time token
the pinned authority signed for it. Every refusal leaves the state dir byte for byte as it
was. The puck here is a test double that reports the hold at once (`Holds`); the real
firmware over real ptys is in test_serial_adversary.py."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from provision_support import snapshot, trust_args
from trustkit import Clinic

from cloud_relay import pki
from edge_agent import config as agent_config
from edge_agent import unitkey
from edge_agent.provision import ServeSettings, Unit, ca_sha256
from scribelink import envelope as env
from scribelink import provisioning as p
from scribelink import trust
from scribelink.authority import bind_unit

BROKER = "mqtts://broker.clinic:8883"
GOOD = {"clinic": "Northside", "room": "Exam 2", "unit_id": "exam-2", "broker_url": BROKER,
        "relay_url": "https://relay.clinic"}
HOLD = {"timeout_s": p.PRESENCE_MIN_TIMEOUT_S}


class Holds:
    """A puck whose button is held the moment a command asks (a test double: the real puck
    firmware answers over a pty in test_serial_adversary.py). Counts the asks."""

    def __init__(self) -> None:
        self.asked = 0

    def state(self) -> str:
        return "present"

    def wait_for_hold(self, seconds, timeout_s, ready, holding) -> bool:
        self.asked += 1
        ready()
        return True


def call(unit: Unit, cmd: str, args: dict | None = None) -> dict:
    return unit.handle(cmd, args or {}, lambda _m: None)


def recovery_b64() -> str:
    return trust.b64(env.public_key_raw(X25519PrivateKey.generate().public_key()))


RECOVERY = recovery_b64()


def enrol(unit: Unit, clinic: Clinic, ca: pki.CA, *, settings: dict | None = None,
          eid: str = "e1", commit: bool = True) -> dict:
    """A whole enrolment as the tool does it; -> install_cert's answer (or its refusal)."""
    st = {**GOOD, "recovery_public_key": RECOVERY, **(settings or {})}
    assert call(unit, "arm_failsafe", {"enrolment_id": eid, "expiry_s": 60})["ok"]
    r = call(unit, "set_config", st)
    if not r["ok"]:
        return r
    gen = call(unit, "generate_key")["result"]
    cert = pki.sign_csr(ca, gen["csr_pem"].encode(), st["unit_id"])
    r = call(unit, "install_cert", {"cert_pem": pki.cert_pem(cert).decode(),
                                    "ca_pem": ca.cert_pem().decode(),
                                    **trust_args(clinic, gen, st["unit_id"])})
    if r["ok"] and commit:
        fp = r["result"]["fingerprint_sha256"]
        (unit.staged / "selftest.json").write_text(json.dumps(
            {"passed": True, "checks": [], "cert_fingerprint_sha256": fp}))
        c = call(unit, "commit", {"tech": "tech1"})
        assert c["ok"], c
    return r


@pytest.fixture
def ca():
    return pki.make_ca()


@pytest.fixture
def clinic():
    return Clinic()


@pytest.fixture
def puck():
    return Holds()


@pytest.fixture
def unit(tmp_path, puck):
    return Unit(ServeSettings(state_dir=tmp_path / "unit", serial_number="SN-1"), presence=puck)


def test_a_commit_pins_the_anchors_and_the_agent_signs_with_the_bound_key(unit, clinic, ca):
    enrol(unit, clinic, ca)
    a = json.loads((unit.dir / "anchor" / "anchors.json").read_text())
    assert a == {"authority": clinic.authority.public_b64(), "broker_url": BROKER,
                 "ca_sha256": ca_sha256(ca.cert), "recovery_public_key": RECOVERY,
                 "unit_id": "exam-2", "clinic": "Northside", "relay_url": "https://relay.clinic"}
    overlay = tomllib.loads((unit.dir / "provisioned.toml").read_text())
    cfg = agent_config.from_dict(overlay)
    keys = cfg.keys
    assert Path(keys.authority_public_key_file).read_text().strip() == a["authority"]
    assert Path(keys.recovery_public_key_file).read_text().strip() == RECOVERY
    assert Path(cfg.broker.ca_file).read_bytes() == ca.cert_pem()
    # what the agent does (edge_agent.agent._load_signer) and what a receiver checks
    key = unitkey.load(keys.signing_key_file)
    binding = json.loads(Path(keys.binding_file).read_text())
    bound = trust.verify_binding(clinic.public, binding)
    assert bound.unit == "exam-2" and bound.sign_key_raw == key.public_raw
    msg = {"t": "session_open", "unit": "exam-2", "room": "Exam 2"}
    trust.verify_message("session_open", {**msg, "sig": trust.sign_message(
        "session_open", msg, key)}, bound.sign_key)
    hello = call(unit, "hello")["result"]
    assert hello["anchor"]["authority_fingerprint"] == clinic.authority.fingerprint
    assert hello["signing_key"] == {"store": "file", "key_id": bound.key_id, "type": "ed25519"}
    assert json.loads((unit.dir / "locked.json").read_text())["sign_key_id"] == bound.key_id


def test_the_unit_checks_its_binding_itself(unit, clinic, ca):
    """A laptop (or a relay behind it) that cannot sign with the code's key cannot bind a
    key to the unit: each of these is refused and nothing is staged."""
    assert call(unit, "arm_failsafe", {"enrolment_id": "e", "expiry_s": 60})["ok"]
    assert call(unit, "set_config", GOOD)["ok"]
    gen = call(unit, "generate_key")["result"]
    cert = pki.cert_pem(pki.sign_csr(ca, gen["csr_pem"].encode(), "exam-2")).decode()
    grant, secret = clinic.authority.grant(unit="exam-2", room="Exam 2", clinic="N",
                                           now_us=time.time_ns() // 1000)
    mine = trust.unb64(gen["sign_key"])
    other_key = trust.ed25519_raw(Ed25519PrivateKey.generate())
    relay_key = Ed25519PrivateKey.generate()  # a relay: it has the grant, not the secret
    forged = trust.sign(trust.BINDING, trust.binding_body(grant=grant, sign_key=mine,
                                                          issued_us=1), relay_key)
    rogue = Clinic()
    rogue_grant, rogue_secret = rogue.authority.grant(unit="exam-2", room="x", clinic="x",
                                                      now_us=1)
    cases = {
        "another unit's binding": (trust_args(clinic, gen, "exam-3")["binding"],
                                   "for unit 'exam-3'"),
        "another key": (bind_unit(grant, secret, other_key, 1).to_dict(), "another key"),
        "not signed by the code's key": ({**forged.to_dict(), "signer": trust.key_id(
            trust.ed25519_raw(trust.code_key(secret)))}, "does not verify"),
        "a grant of another authority": (bind_unit(rogue_grant, rogue_secret, mine, 1)
                                         .to_dict(), "signed by"),
        # signed with the code's key, but naming its Ed25519 key a P-256 one
        "a key of another type": (trust.sign(trust.BINDING, {
            **trust.binding_body(grant=grant, sign_key=mine, issued_us=1),
            "key_type": trust.KEY_P256}, trust.code_key(secret)).to_dict(), "65-byte"),
    }
    for what, (binding, why) in cases.items():
        r = call(unit, "install_cert", {"cert_pem": cert, "ca_pem": ca.cert_pem().decode(),
                                        "binding": binding,
                                        "authority": clinic.authority.public_b64()})
        assert r["error"]["code"] == p.E_BINDING_INVALID, (what, r)
        assert why in r["error"]["message"], (what, r["error"]["message"])
    r = call(unit, "install_cert", {"cert_pem": cert, "ca_pem": ca.cert_pem().decode(),
                                    "binding": cases["another key"][0], "authority": "AAAA"})
    assert r["error"]["code"] == p.E_BAD_REQUEST
    assert call(unit, "hello")["result"]["failsafe"]["staged"]["cert"] is None


def test_factory_reset_keeps_the_anchors_and_they_hold_against_the_next_enrolment(
        unit, clinic, ca, tmp_path):
    enrol(unit, clinic, ca)
    anchors = (unit.dir / "anchor" / "anchors.json").read_bytes()
    r = call(unit, "factory_reset", {**HOLD, "token": clinic.token("exam-2", "factory_reset")})
    assert r["ok"] and r["result"]["state"] == "blank", r
    assert r["result"]["kept"] == ["trust anchors"]
    assert (unit.dir / "anchor" / "anchors.json").read_bytes() == anchors
    assert not (unit.dir / "tls").exists() and not (unit.dir / "binding.json").exists()
    hello = call(unit, "hello")["result"]
    assert hello["state"] == "blank" and hello["anchor"]["unit_id"] == "exam-2"
    before = snapshot(unit.dir)

    # another clinic's code: "this unit belongs to another clinic"
    r = enrol(unit, Clinic(), ca, eid="b")
    assert r["error"]["code"] == p.E_OTHER_CLINIC and "release token" in r["error"]["message"]
    call(unit, "rollback")
    # this clinic, but another broker or recovery key: a set_trust token's business
    for change in ({"broker_url": "mqtts://evil.example:8883"},
                   {"recovery_public_key": recovery_b64()}):
        r = enrol(unit, clinic, ca, settings=change, eid="c")
        assert r["error"]["code"] == p.E_TRUST_ANCHOR and "set_trust token" in \
            r["error"]["message"], r
        call(unit, "rollback")
    # another CA (a relay swapping the transport CA)
    r = enrol(unit, clinic, pki.make_ca("Another CA"), eid="d")
    assert r["error"]["code"] == p.E_TRUST_ANCHOR and "CA" in r["error"]["message"]
    call(unit, "rollback")
    assert snapshot(unit.dir) == before
    # the same clinic, the same anchors: enrolled again (as another room's unit, even)
    enrol(unit, clinic, ca, settings={"unit_id": "exam-9", "room": "Exam 9"}, eid="e")
    assert call(unit, "hello")["result"]["anchor"]["unit_id"] == "exam-9"


def test_an_authority_pinned_in_the_units_image_is_the_only_one_it_takes(tmp_path, clinic, ca):
    (tmp_path / "authority.pub").write_text(clinic.authority.public_b64() + "\n")
    site = tmp_path / "agent.toml"
    site.write_text(f'[keys]\nauthority_public_key_file = "{tmp_path / "authority.pub"}"\n')
    unit = Unit(ServeSettings(state_dir=tmp_path / "u", site_config=str(site)))
    r = enrol(unit, Clinic(), ca)
    assert r["error"]["code"] == p.E_OTHER_CLINIC and "in its image" in r["error"]["message"]
    call(unit, "rollback")
    assert enrol(unit, clinic, ca, eid="f")["ok"]


def test_tokens_work_once_for_one_unit_and_one_action(unit, clinic, ca, puck, tmp_path):
    enrol(unit, clinic, ca)
    before = snapshot(unit.dir)
    rogue = Clinic()
    expired = clinic.authority.token(unit="exam-2", action="unlock", ttl_s=1,
                                     now_us=time.time_ns() // 1000 - 10_000_000).to_dict()
    for cmd in ("unlock", "factory_reset", "release"):
        r = call(unit, cmd, HOLD)
        assert r["error"]["code"] == p.E_TOKEN_REQUIRED, r
        assert "the hold alone is not enough" in r["error"]["message"]
        bad = {"signed by another authority": rogue.token("exam-2", cmd),
               "for another unit": clinic.token("exam-3", cmd),
               "for another action": clinic.token(
                   "exam-2", "set_trust" if cmd != "set_trust" else "unlock"),
               "junk": {"t": "token", "body": {}, "signer": "x", "sig": "AA=="}}
        if cmd == "unlock":
            bad["expired"] = expired
        for what, token in bad.items():
            r = call(unit, cmd, {**HOLD, "token": token})
            assert r["error"]["code"] == p.E_TOKEN_INVALID, (cmd, what, r)
    assert puck.asked == 0  # no hold was even asked for
    assert snapshot(unit.dir) == before

    token = clinic.token("exam-2", "unlock")
    assert call(unit, "unlock", {**HOLD, "token": token})["result"]["state"] == "enrolled"
    assert puck.asked == 1
    enrol(unit, clinic, ca, eid="again")  # locked again by a new enrolment
    again = Unit(ServeSettings(state_dir=unit.dir), presence=puck)  # and the unit restarted
    before = snapshot(again.dir)
    r = call(again, "unlock", {**HOLD, "token": token})
    assert r["error"]["code"] == p.E_TOKEN_INVALID and "already used" in r["error"]["message"]
    assert snapshot(again.dir) == before
    used = json.loads((unit.dir / "anchor" / "used-tokens.json").read_text())["used"]
    assert [u["id"] for u in used] == [token["body"]["token_id"]]


def test_a_locked_unit_refuses_every_change_of_an_anchor_without_a_token(unit, clinic, ca):
    enrol(unit, clinic, ca)
    before = snapshot(unit.dir)
    for cmd, args in (("set_config", {"broker_url": "mqtts://evil.example:8883"}),
                      ("set_config", {"recovery_public_key": recovery_b64()}),
                      ("arm_failsafe", {"enrolment_id": "evil"}),
                      ("set_trust", {**HOLD, "ca_pem": pki.make_ca().cert_pem().decode()}),
                      ("set_trust", {**HOLD, "token": clinic.token(
                          "exam-2", "unlock")})):
        r = call(unit, cmd, args)
        assert r["error"]["code"] in (p.E_LOCKED, p.E_TOKEN_REQUIRED, p.E_TOKEN_INVALID), r
    assert snapshot(unit.dir) == before


def test_set_trust_changes_exactly_what_the_authority_signed_once(unit, clinic, ca, puck):
    enrol(unit, clinic, ca)
    new_recovery = recovery_b64()
    args = {"broker_url": "mqtts://broker2.clinic:8883", "recovery_public_key": new_recovery}
    token = clinic.token("exam-2", "set_trust", args=args)
    edited = json.loads(json.dumps(token))
    edited["body"]["args"]["broker_url"] = "mqtts://evil.example:8883"
    before = snapshot(unit.dir)
    r = call(unit, "set_trust", {**HOLD, "token": edited})
    assert r["error"]["code"] == p.E_TOKEN_INVALID and "does not verify" in r["error"]["message"]
    assert snapshot(unit.dir) == before
    r = call(unit, "set_trust", {**HOLD, "token": token})
    assert r["ok"] and r["result"]["changed"] == ["broker_url", "recovery_public_key"], r
    assert r["result"]["state"] == "locked" and r["result"]["restart_agent"]
    a = json.loads((unit.dir / "anchor" / "anchors.json").read_text())
    assert a["broker_url"] == args["broker_url"] and a["recovery_public_key"] == new_recovery
    assert json.loads((unit.dir / "settings.json").read_text())["broker_url"] == \
        args["broker_url"]
    cfg = agent_config.from_dict(tomllib.loads((unit.dir / "provisioned.toml").read_text()))
    assert cfg.broker.url == args["broker_url"]
    assert Path(cfg.keys.recovery_public_key_file).read_text().strip() == new_recovery
    before = snapshot(unit.dir)
    r = call(unit, "set_trust", {**HOLD, "token": token})  # replayed
    assert r["error"]["code"] == p.E_TOKEN_INVALID and "already used" in r["error"]["message"]
    assert snapshot(unit.dir) == before

    # the CA: the token names its SHA-256, the command carries the certificate
    new_ca = pki.make_ca("Clinic CA 2")
    token = clinic.token("exam-2", "set_trust", args={"ca_sha256": ca_sha256(new_ca.cert)})
    r = call(unit, "set_trust", {**HOLD, "token": token, "ca_pem": ca.cert_pem().decode()})
    assert r["error"]["code"] == p.E_TOKEN_INVALID and "SHA-256" in r["error"]["message"]
    r = call(unit, "set_trust", {**HOLD, "token": token, "ca_pem": new_ca.cert_pem().decode()})
    assert r["ok"] and r["result"]["reenrol"], r
    assert (unit.dir / "anchor" / "ca.pem").read_bytes() == new_ca.cert_pem()

    # the authority itself: the old one hands the unit over; from now on only the new
    # one's tokens count
    successor = Clinic()
    token = clinic.token("exam-2", "set_trust",
                         args={"authority": successor.authority.public_b64()})
    assert call(unit, "set_trust", {**HOLD, "token": token})["ok"]
    assert (unit.dir / "anchor" / "authority.pub").read_text().strip() == \
        successor.authority.public_b64()
    r = call(unit, "unlock", {**HOLD, "token": clinic.token("exam-2", "unlock")})
    assert r["error"]["code"] == p.E_TOKEN_INVALID
    assert call(unit, "unlock", {**HOLD, "token": successor.token("exam-2", "unlock")})["ok"]
    # what a token may change is only what a unit pins
    r = call(unit, "set_trust", {**HOLD, "token": successor.token(
        "exam-2", "set_trust", args={"room": "x"})})
    assert r["error"]["code"] == p.E_TOKEN_INVALID and "names no trust anchor" in \
        r["error"]["message"]


def test_release_lets_go_of_the_clinic_but_not_of_the_used_tokens(unit, clinic, ca):
    enrol(unit, clinic, ca)
    token = clinic.token("exam-2", "release")
    r = call(unit, "release", {**HOLD, "token": token})
    assert r["ok"] and "trust anchors" in r["result"]["erased"], r
    assert sorted(f.name for f in (unit.dir / "anchor").iterdir()) == ["used-tokens.json"]
    hello = call(unit, "hello")["result"]
    assert hello["state"] == "blank" and hello["anchor"] is None
    # a blank unit pinned to nobody needs no token (there is nothing to protect)...
    assert call(unit, "factory_reset", HOLD)["ok"]
    # ...and any clinic's code pins it
    other = Clinic()
    enrol(unit, other, ca, eid="other")
    assert call(unit, "hello")["result"]["anchor"]["authority"] == other.authority.public_b64()
    r = call(unit, "set_trust", {**HOLD, "token": other.token("exam-2", "set_trust", args={
        "broker_url": "mqtts://b.example:8883"})})
    assert r["ok"]


def test_set_trust_waits_for_a_staged_enrolment_to_finish(unit, clinic, ca):
    enrol(unit, clinic, ca)
    call(unit, "unlock", {**HOLD, "token": clinic.token("exam-2", "unlock")})
    enrol(unit, clinic, ca, eid="half", commit=False)
    token = clinic.token("exam-2", "set_trust", args={"broker_url": "mqtts://b.example:8883"})
    r = call(unit, "set_trust", {**HOLD, "token": token})
    assert r["error"]["code"] == p.E_FAILSAFE_BUSY
    call(unit, "rollback")
    assert call(unit, "set_trust", {**HOLD, "token": token})["ok"]  # not spent by the refusal
