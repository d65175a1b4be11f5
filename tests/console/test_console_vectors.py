"""The browser opens every envelope vector exactly as the Python reference receiver does:
HPKE session-key unwrapping on WebCrypto (RFC 9180 base mode, non-extractable X25519 key)
and AES-256-GCM chunks with the header as AAD."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from console_support import in_module

from scribelink import envelope as env

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "envelope.json"


def load_vectors() -> dict:
    return json.loads(VECTORS.read_text())


def all_frames(v: dict) -> list[str]:
    return ([c["frame"] for c in v["chunks"]] + [t["frame"] for t in v.get("tampered", [])]
            + [r["frame"] for r in v.get("replayed", [])])


def open_vectors(page, v: dict) -> dict:
    return in_module(page, "/tests/testkit.js", "return m.openVectors(arg);", v)


def test_browser_opens_every_vector_like_the_reference(module_page):
    v = load_vectors()
    out = open_vectors(module_page, {
        "private_key": v["scribe_private_key"], "session_open": v["session_open"],
        "frames": all_frames(v)})
    assert out["session_key"] == "opened"
    n = len(v["chunks"])
    for c, r in zip(v["chunks"], out["results"][:n], strict=True):
        assert r["ok"], r
        want = base64.b64decode(c["plaintext"])
        assert base64.b64decode(r["plaintext"]) == want
        assert r["sha256"] == hashlib.sha256(want).hexdigest()
        if "plaintext_sha256" in c:
            assert r["sha256"] == c["plaintext_sha256"]
    for t, r in zip(v.get("tampered", []), out["results"][n:n + len(v.get("tampered", []))],
                    strict=True):
        assert not r["ok"], f"tampered frame opened: {t.get('why')}"
        assert r["error"] in ("OpenError", "EnvelopeError"), r
    # each frame opens (or fails) exactly as scribelink.envelope opens it
    key = bytes.fromhex(v["session_key"])
    for f, r in zip(all_frames(v), out["results"], strict=True):
        try:
            env.open_envelope(base64.b64decode(f), key)
            ok = True
        except (env.OpenError, env.EnvelopeError):
            ok = False
        assert r["ok"] == ok
    # (the full receive path, signatures and all, is held to tests/vectors/trust.json in
    # test_console_receiver.py)


def test_recovery_key_opens_and_unrelated_key_does_not(module_page):
    v = load_vectors()
    assert "recovery_private_key" in v, "tests/vectors/envelope.json lost its recovery key"
    frames = [c["frame"] for c in v["chunks"]]
    rec = open_vectors(module_page, {
        "private_key": v["recovery_private_key"], "session_open": v["session_open"],
        "frames": frames})
    assert rec["session_key"] == "opened"
    assert all(r["ok"] for r in rec["results"])
    other = open_vectors(module_page, {
        "private_key": v["unrelated_private_key"], "session_open": v["session_open"],
        "frames": frames})
    assert other["session_key"] is None  # no recipient entry carries its key id
    assert not any(r["ok"] for r in other["results"])


def test_hpke_info_matches_wrap_info(module_page):
    v = load_vectors()
    assert "hpke_info_example" in v, "tests/vectors/envelope.json lost its info example"
    got = module_page.evaluate("""async (v) => {
        const m = await import('/console/js/crypto.js');
        const kid = await m.keyId(m.b64decode(v.pub));
        return m.b64encode(m.wrapInfo(v.unit, m.fromHex(v.session), kid));
    }""", {"pub": v["scribe_public_key"], "unit": v["session_open"]["unit"],
           "session": v["session_open"]["session"]})
    assert got == v["hpke_info_example"]
