"""What the tech's tool (scripts/provision) checks before anything on the unit changes, in
process: the grant a relay hands over must be signed by the authority the *code* names
(never one the relay names), for this unit and this code's key, unexpired; a code must
name a clinic authority; an anchored unit must be pinned to that authority, broker and
recovery key. A relay that lies is caught here, on the laptop; the unit checks again."""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from provision_support import ROOT
from trustkit import Clinic

from scribelink import enrolcode, trust
from scribelink import envelope as env


def load_tool():
    loader = importlib.machinery.SourceFileLoader("provision_tool",
                                                  str(ROOT / "scripts" / "provision"))
    mod = importlib.util.module_from_spec(importlib.util.spec_from_loader("provision_tool",
                                                                          loader))
    loader.exec_module(mod)
    return mod


TOOL = load_tool()


def enrolment(clinic: Clinic | None, unit: str = "exam-3", *, recovery: bytes | None = None,
              broker: str = "mqtts://broker.clinic:8883", ago_s: int = 0, ttl_s: int = 3600):
    """-> (the tool's Enrolment for a code, the grant the clinic signed for that code)."""
    grant, secret = (clinic or Clinic()).authority.grant(
        unit=unit, room="Exam 3", clinic="N", ttl_s=ttl_s,
        now_us=time.time_ns() // 1000 - ago_s * 1_000_000)
    code = enrolcode.EnrolCode(secret=secret, relay_url="https://relay.clinic",
                               broker_url=broker, clinic="N", room="Exam 3", unit_id=unit,
                               recovery_public_key=recovery,
                               authority=clinic.authority.public_raw if clinic else None)
    a = argparse.Namespace(relay_ca=None, user=None, password_file=None, json=False)
    return TOOL.Enrolment(a, code), grant


def test_the_grant_must_be_the_codes_authoritys_for_this_unit_and_code():
    clinic = Clinic()
    e, grant = enrolment(clinic)
    assert e.verified_grant(grant.to_dict()).body["unit"] == "exam-3"
    relay_own = Clinic()  # a relay that signs a grant with a key of its own
    forged, _ = relay_own.authority.grant(unit="exam-3", room="x", clinic="x",
                                          now_us=time.time_ns() // 1000)
    other_unit, _ = clinic.authority.grant(unit="exam-4", room="x", clinic="x",
                                           now_us=time.time_ns() // 1000)
    other_code, _ = clinic.authority.grant(unit="exam-3", room="x", clinic="x",
                                           now_us=time.time_ns() // 1000)
    e_expired, expired = enrolment(clinic, ago_s=10, ttl_s=1)
    for _what, g, why in (("another authority", forged, "signed by"),
                         ("another unit", other_unit, "for unit 'exam-4'"),
                         ("another code", other_code, "another code key"),
                         ("junk", {"t": "unit_grant"}, "{t, body, signer, sig}")):
        with pytest.raises(trust.TrustError, match=why):
            e.verified_grant(g if isinstance(g, dict) else g.to_dict())
    with pytest.raises(trust.TrustError, match="expired"):
        e_expired.verified_grant(expired.to_dict())


def anchor_of(clinic: Clinic, broker: str = "mqtts://broker.clinic:8883",
              recovery: bytes | None = None) -> dict:
    raw = clinic.authority.public_raw
    return {"authority": trust.b64(raw), "authority_fingerprint": trust.fingerprint(raw),
            "broker_url": broker, "ca_sha256": "0" * 64, "unit_id": "exam-3",
            "recovery_public_key": trust.b64(recovery) if recovery else None}


def test_a_pinned_unit_takes_only_codes_of_its_clinic_with_its_anchors():
    clinic = Clinic()
    recovery = env.public_key_raw(X25519PrivateKey.generate())
    e, _ = enrolment(clinic, recovery=recovery)
    assert "pins nothing yet" in e.check_anchor({"anchor": None})
    assert "pinned to this code's clinic" in e.check_anchor(
        {"anchor": anchor_of(clinic, recovery=recovery)})
    with pytest.raises(TOOL.Failed, match="belongs to another clinic") as f:
        e.check_anchor({"anchor": anchor_of(Clinic())})
    assert "release token" in f.value.action
    with pytest.raises(TOOL.Failed, match="trust anchors") as f:
        e.check_anchor({"anchor": anchor_of(clinic, broker="mqtts://old.clinic:8883",
                                            recovery=recovery)})
    assert "set-trust --broker-url mqtts://broker.clinic:8883" in f.value.action
    with pytest.raises(TOOL.Failed, match="trust anchors") as f:
        e.check_anchor({"anchor": anchor_of(clinic)})  # pinned no recovery key; code has one
    assert "set-trust --recovery-key-file" in f.value.action
    # a code the relay made before the trust root names no authority: refused
    no_authority, _ = enrolment(None)
    with pytest.raises(TOOL.Failed, match="without the clinic authority"):
        no_authority.check_anchor({"anchor": None})
