"""scribelink.trust: canonical bytes, statements, chains, the authority's key file.
Pure and fast: no process, no socket."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scribelink import envelope as env
from scribelink import trust as t

NOW = 1_800_000_000_000_000


def raw(k) -> bytes:
    return t.ed25519_raw(k)


def x_raw(k) -> bytes:
    return env.public_key_raw(k)


def test_canonical_is_sorted_ascii_and_refuses_floats():
    assert t.canonical({"b": 1, "a": "Pédiatrie \u2028"}) == \
        b'{"a":"P\\u00e9diatrie \\u2028","b":1}'
    with pytest.raises(t.TrustError, match="floats"):
        t.canonical({"x": 1.5})
    with pytest.raises(t.TrustError, match="53 bits"):
        t.canonical({"x": 2**60})


def test_a_statement_verifies_only_with_its_signer_and_unaltered():
    auth, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    st = t.sign(t.ASSIGNMENT, t.assignment_body(unit="u1", room="Exam 1", scribes=["s1"],
                                                issued_us=NOW), auth)
    d = json.loads(json.dumps(st.to_dict()))  # over the wire and back
    assert t.verify_assignment(auth.public_key(), d, "u1")["scribes"] == ["s1"]
    with pytest.raises(t.TrustError, match="signed by"):
        t.verify_assignment(other.public_key(), d, "u1")
    edited = {**d, "body": {**d["body"], "scribes": ["s1", "relay-friend"]}}
    with pytest.raises(t.TrustError, match="does not verify"):
        t.verify_assignment(auth.public_key(), edited, "u1")
    with pytest.raises(t.TrustError, match="another unit"):
        t.verify_assignment(auth.public_key(), d, "u2")
    # a statement of another type cannot stand in for it, even with a valid signature
    tok = t.sign(t.TOKEN, {"unit": "u1", "scribes": ["s1"], "issued_us": NOW, "room": "x"},
                 auth)
    with pytest.raises(t.TrustError, match="expected a assignment"):
        t.verify_assignment(auth.public_key(), tok.to_dict(), "u1")


def device(scribe, signer, *, kind="person"):
    enc, sign = X25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    body = t.device_body(scribe=scribe, enc_key=x_raw(enc), sign_key=raw(sign), label="laptop",
                         issued_us=NOW, kind=kind)
    return t.sign(t.DEVICE, body, signer).to_dict(), sign


def test_devices_hold_when_the_authority_or_a_sibling_of_the_same_scribe_endorsed_them():
    auth = Ed25519PrivateKey.generate()
    a, a_key = device("s1", auth)
    b, b_key = device("s1", a_key)  # endorsed by s1's first device
    c, _ = device("s2", a_key)  # s1's device cannot endorse another scribe
    d, _ = device("s1", b_key)  # two steps from the authority: no
    e, _ = device("s1", Ed25519PrivateKey.generate())  # a stranger (the relay)
    got = t.endorsed_devices(auth.public_key(), [a, b, c, d, e, {"junk": 1}])
    assert {x.device for x in got.values()} == {a["body"]["device"], b["body"]["device"]}
    assert got[b["body"]["device"]].endorsed_by == a["body"]["device"]
    # revoking the first device takes the one it endorsed with it
    got = t.endorsed_devices(auth.public_key(), [a, b], revoked=frozenset({a["body"]["device"]}))
    assert got == {}


def test_low_order_x25519_keys_are_refused():
    with pytest.raises(t.TrustError, match="low-order"):
        t.check_x25519(bytes(32))
    with pytest.raises(t.TrustError, match="low-order"):
        t.check_x25519(bytes([1]) + bytes(31))
    t.check_x25519(x_raw(X25519PrivateKey.generate()))


def test_a_binding_needs_the_code_key_of_an_authority_grant():
    auth = Ed25519PrivateKey.generate()
    code_key, redeem = t.code_secret_keys(b"s" * 20)
    assert len(redeem) == 32 and raw(code_key) != redeem
    grant = t.sign(t.GRANT, t.grant_body(unit="u1", room="Exam 1", clinic="Northside",
                                         code_key=raw(code_key), issued_us=NOW,
                                         expires_us=NOW + 3600 * 10**6), auth)
    unit_key = Ed25519PrivateKey.generate()
    binding = t.sign(t.BINDING, t.binding_body(grant=grant, sign_key=raw(unit_key),
                                               issued_us=NOW), code_key)
    b = t.verify_binding(auth.public_key(), binding.to_dict())
    assert (b.unit, b.key_id) == ("u1", t.key_id(raw(unit_key)))
    # the relay (transport CA, no code) signs its own binding under the same grant: refused
    relay = Ed25519PrivateKey.generate()
    forged = t.sign(t.BINDING, t.binding_body(grant=grant, sign_key=raw(relay), issued_us=NOW),
                    relay)
    with pytest.raises(t.TrustError):
        t.verify_binding(auth.public_key(), forged.to_dict())
    # or its own grant
    own = t.sign(t.GRANT, grant.body, relay)
    with pytest.raises(t.TrustError):
        t.verify_binding(auth.public_key(), t.sign(t.BINDING, t.binding_body(
            grant=own, sign_key=raw(relay), issued_us=NOW), code_key).to_dict())


def test_tokens_are_for_one_unit_one_action_once_and_expire():
    auth = Ed25519PrivateKey.generate()
    tok = t.sign(t.TOKEN, t.token_body(unit="u1", action="unlock", token_id="tk1", issued_us=NOW,
                                       expires_us=NOW + 600 * 10**6), auth).to_dict()
    ok = dict(unit="u1", action="unlock", now_us=NOW, used=set())
    assert t.verify_token(auth.public_key(), tok, **ok)["token_id"] == "tk1"
    for bad, why in (({"unit": "u2"}, "another unit"), ({"action": "factory_reset"}, "allows"),
                     ({"now_us": NOW + 601 * 10**6}, "expired"), ({"used": {"tk1"}}, "once")):
        with pytest.raises(t.TrustError, match=why):
            t.verify_token(auth.public_key(), tok, **{**ok, **bad})


def test_revocations_by_unit_key_and_time():
    auth = Ed25519PrivateKey.generate()
    rv = t.verify_revocations(auth.public_key(), t.sign(t.REVOCATIONS, t.revocations_body(
        serial=3, issued_us=NOW, units=[{"unit": "u1", "sign_key_id": "ab" * 8,
                                         "after_us": NOW}], devices=["d1"]), auth).to_dict())
    assert rv.serial == 3 and "d1" in rv.devices
    assert rv.unit_revoked("u1", "ab" * 8, NOW + 1)
    assert not rv.unit_revoked("u1", "ab" * 8, NOW - 1)
    assert not rv.unit_revoked("u1", "cd" * 8, NOW + 1)


def test_unit_messages_are_signed_over_every_field():
    key = Ed25519PrivateKey.generate()
    msg = {"type": "session_close", "unit": "u1", "last_audio_seq": 99, "reason": "ended"}
    msg["sig"] = t.sign_message("session_close", msg, key)
    t.verify_message("session_close", msg, key.public_key())
    with pytest.raises(t.TrustError, match="forged or altered"):
        t.verify_message("session_close", {**msg, "last_audio_seq": 40}, key.public_key())
    with pytest.raises(t.TrustError):  # the same bytes under another domain
        t.verify_message("gap", msg, key.public_key())


def test_the_authority_key_file_opens_only_with_its_passphrase():
    key = Ed25519PrivateKey.generate()
    doc = t.seal_authority(key, "correct horse battery", iterations=100_000)
    assert t.authority_public(doc).public_bytes_raw() == raw(key)
    assert "correct" not in json.dumps(doc)
    assert raw(t.open_authority(doc, "correct horse battery")) == raw(key)
    with pytest.raises(t.TrustError, match="wrong passphrase"):
        t.open_authority(doc, "wrong horse battery")
    with pytest.raises(t.TrustError, match="at least 12"):
        t.seal_authority(key, "short")
