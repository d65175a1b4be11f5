"""What goes into a diagnostics bundle (edge_agent.diagnostics): an allow-list, so a status
that carries session ids, rooms or keys never leaks them; and the sealing
(scribelink.diagnostics): only the requesting admin's key opens it, for that request."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent import diagnostics as d
from scribelink import diagnostics as sd
from scribelink import envelope as env

SECRET = base64.b64encode(bytes(range(32)) * 2).decode()  # looks like a key


def test_only_allowed_fields_and_no_secretish_strings():
    status = {"online": True, "session": "ab" * 16, "room": "Exam 4", "capture": "live",
              "last_gap": {"session": "cd" * 16}, "last_error": f"bad key {SECRET}",
              "spool": {"records": 3}, "version": "1.2.0", "update": {"phase": "none"}}
    ring = d.LogRing(size=3)
    log = logging.getLogger("test.diag")
    log.addHandler(ring)
    log.setLevel(logging.INFO)
    for i in range(5):
        log.info("event=line n=%d token=%s", i, SECRET)
    b = d.collect(unit_id="u1", version="1.2.0", status=status, spool={"records": 3},
                  link={"connected": True, "secret": "x"}, update={}, installer={
                      "state": "applied", "trial_id": "t", "to": "1.2.0"},
                  selftest={"checks": [{"check": "mic1", "ok": True, "rms_dbfs": -40,
                                        "raw_samples": [1, 2, 3]}]}, logs=ring.lines())
    text = json.dumps(b)
    assert "ab" * 16 not in text and "cd" * 16 not in text and "Exam 4" not in text
    assert SECRET not in text and "[redacted]" in b["status"]["last_error"]
    assert len(b["logs"]) == 3 and all("[redacted]" in x for x in b["logs"])
    assert b["link"] == {"connected": True, "inflight": None, "last_error": None}
    assert b["selftest"] == [{"check": "mic1", "ok": True, "rms_dbfs": -40}]
    assert b["installer"] == {"state": "applied", "to": "1.2.0"}


def test_sealed_to_one_key_for_one_unit_and_request():
    admin = X25519PrivateKey.generate()
    pub = base64.b64encode(env.public_key_raw(admin)).decode()
    sealed = sd.seal({"x": 1}, recipient_b64=pub, unit_id="u1", request_id="r1")
    assert sd.open_bundle(sealed, admin, unit_id="u1", request_id="r1") == {"x": 1}
    for kw in ({"unit_id": "u2", "request_id": "r1"}, {"unit_id": "u1", "request_id": "r2"}):
        with pytest.raises(sd.BundleError):
            sd.open_bundle(sealed, admin, **kw)
    with pytest.raises(sd.BundleError):
        sd.open_bundle(sealed, X25519PrivateKey.generate(), unit_id="u1", request_id="r1")
    flipped = bytearray(sealed)
    flipped[-5] ^= 1
    with pytest.raises(sd.BundleError):
        sd.open_bundle(bytes(flipped), admin, unit_id="u1", request_id="r1")
    with pytest.raises(sd.BundleError):
        sd.seal({}, recipient_b64="not a key", unit_id="u1", request_id="r1")
