"""tests/vectors/trust.json holds for the Python owners of the formats (scribelink.trust,
scribelink.keyshare, the reference receiver). The browser is held to the same file in
tests/console/test_console_trust.py; `scripts/make-trust-vectors` writes it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_relay.receiver import Receiver
from scribelink import keyshare, trust

V = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "trust.json").read_text())
AUTH = trust.load_ed25519(V["authority"]["public"])


def b(s: str) -> bytes:
    return base64.b64decode(s)


def test_canonical_bytes():
    for case in V["canonical"]:
        assert trust.canonical(case["value"]).decode() == case["canonical"]
    for case in V["not_canonical"]:
        with pytest.raises(trust.TrustError):
            trust.canonical(case["value"])


def test_statements_and_signatures_are_reproducible():
    sv = V["statement_signing"]
    assert trust.signed_bytes(sv["t"], sv["body"]) == b(sv["signed_bytes"])
    key = Ed25519PrivateKey.from_private_bytes(b(V["authority"]["seed"]))
    assert trust.sign(sv["t"], sv["body"], key).to_dict() == sv["statement"]  # deterministic
    assert trust.key_id(trust.ed25519_raw(key)) == V["authority"]["key_id"]
    assert trust.fingerprint(trust.ed25519_raw(key)) == V["authority"]["fingerprint"]


def test_device_chains():
    d = V["devices"]
    got = trust.endorsed_devices(AUTH, d["statements"])
    assert sorted(got) == sorted(d["endorsed"])
    for k, dev in got.items():
        want = d["endorsed"][k]
        assert (dev.scribe, dev.kind, dev.endorsed_by, trust.b64(dev.sign_key)) == (
            want["scribe"], want["kind"], want["endorsed_by"], want["sign_key"])
    assert sorted(trust.endorsed_devices(AUTH, d["statements"], revoked=frozenset(
        [d["a"]["device"]]))) == d["endorsed_when_a_revoked"]


def test_assignment_revocations_bindings():
    a = V["assignment"]
    assert trust.verify_assignment(AUTH, a["statement"], a["unit"])["scribes"]
    with pytest.raises(trust.TrustError):
        trust.verify_assignment(AUTH, a["forged"], a["unit"])
    r = trust.verify_revocations(AUTH, V["revocations"]["statement"])
    assert r.serial == V["revocations"]["serial"]
    assert r.unit_revoked(a["unit"], V["revocations"]["unit_key_id"], V["revocations"]["after_us"])
    bd = V["bindings"]
    assert trust.verify_binding(AUTH, bd["good"]).key_id == bd["unit_key_id"]
    for bad in bd["bad"]:
        with pytest.raises(trust.TrustError):
            trust.verify_binding(AUTH, bad["binding"])
    assert trust.verify_binding(AUTH, bd["other_unit"]).unit != bd["unit"]


@pytest.mark.parametrize("who,revoked", [("a", False), ("b", False), ("a", True)])
def test_the_reference_receiver_agrees_with_the_vectors(who, revoked):
    s = V["session"]
    key = X25519PrivateKey.from_private_bytes(b(V["devices"][who]["enc_private"]))
    rv = trust.verify_revocations(AUTH, s["revoked_from"]) if revoked else trust.Revocations()
    records: list[dict] = []
    rx = Receiver(key, authority=AUTH, on_audio=lambda *a: None, on_record=records.append,
                  revocations=lambda: rv)
    for it in s["items"]:
        if "item" in it:
            rx.session_item(dict(it["item"]))
        else:
            rx.envelope(b(it["frame"]))
    want = s["reference_a_revoked" if revoked else f"reference_{who}"]
    assert rx.counters == want["counters"]
    assert [r["session"] for r in records if r["type"] == "session_complete"] == want["complete"]


def test_reply_and_key_share_open_here():
    r = V["reply"]
    assert trust._reply_key(b(r["session_key"])) == b(r["key"])
    body = trust.open_reply(b(r["session_key"]), unit=r["unit"], session_hex=r["session"],
                            sealed=r["sealed"])
    devs = trust.endorsed_devices(AUTH, V["devices"]["statements"])
    dev = devs[V["devices"]["a"]["device"]]
    assert trust.verify_reply(body, unit=r["unit"], session_hex=r["session"], device=dev) == \
        r["body"]
    ks = V["key_share"]
    share = keyshare.KeyShare.from_dict(ks["share"])
    me = devs[V["devices"]["b"]["device"]]
    assert keyshare.verify(share, me=me, devices=devs).device == V["devices"]["a"]["device"]
    key = X25519PrivateKey.from_private_bytes(b(V["devices"]["b"]["enc_private"]))
    assert keyshare.open_share(share, key) == b(ks["session_key"])
    # a robot is endorsed, but for another scribe: its share does not count
    with pytest.raises(trust.TrustError, match="another scribe"):
        keyshare.verify(keyshare.KeyShare.from_dict(ks["from_robot"]), me=me, devices=devs)
    # and an altered share does not verify
    altered = keyshare.KeyShare.from_dict({**ks["share"], "issued_us": 1})
    with pytest.raises(trust.TrustError, match="signature"):
        keyshare.verify(altered, me=me, devices=devs)
