"""The browser opens every envelope vector exactly as the Python reference receiver does:
HPKE session-key unwrapping on WebCrypto (RFC 9180 base mode, non-extractable X25519 key)
and AES-256-GCM chunks with the header as AAD."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from console_support import in_module
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_relay.scribe_client import Receiver
from scribelink import envelope as env
from scribelink import messages as msgs

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "envelope.json"


def load_vectors() -> dict:
    if VECTORS.exists():
        return json.loads(VECTORS.read_text())
    return make_vectors()  # the lead's file is the contract; this is only a fallback


def make_vectors() -> dict:
    scribe = X25519PrivateKey.generate()
    sid, key = env.new_session_id(), env.new_session_key()
    unit = "unit-vector-local"
    open_msg = msgs.session_open(unit_id=unit, session_id=sid, session_key=key,
                                 recipients=[("scribe", "s", scribe.public_key())],
                                 started_us=1, sample_rate=16000, chunk_ms=40)
    chunks = []
    for seq in range(3):
        pcm = bytes(range(256)) * 5
        h = env.Header(env.TYPE_AUDIO, sid, seq, 1 + seq * 40000, unit, sample_count=640)
        chunks.append({"frame": base64.b64encode(env.seal(h, pcm, key)).decode(),
                       "plaintext": base64.b64encode(pcm).decode()})
    bad = bytearray(base64.b64decode(chunks[0]["frame"]))
    bad[-1] ^= 1
    raw = scribe.private_bytes_raw()
    return {"scribe_private_key": base64.b64encode(raw).decode(), "session_open": open_msg,
            "chunks": chunks, "tampered": [{"frame": base64.b64encode(bad).decode()}],
            "replayed": [{"frame": chunks[0]["frame"]}]}


def python_reference(v: dict, private_b64: str) -> dict:
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    audio: list[bytes] = []
    records: list[dict] = []
    rx = Receiver(key, on_audio=lambda s, h, pcm: audio.append(pcm), on_record=records.append)
    rx.session_item(dict(v["session_open"]))
    for f in all_frames(v):
        rx.envelope(base64.b64decode(f))
    return {"counters": rx.counters, "audio": b"".join(audio),
            "events": [r for r in records if r["type"] == "event"]}


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
    # the full receive path agrees with the Python reference, counter for counter
    ref = python_reference(v, v["scribe_private_key"])["counters"]
    assert {"tampered", "replayed", "malformed", "chunks", "events"} <= ref.keys() & out["counters"].keys()
    assert {k: out["counters"][k] for k in ref if k in out["counters"]} == {
        k: ref[k] for k in ref if k in out["counters"]}, (out["counters"], ref)


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
    ref = python_reference(v, v["unrelated_private_key"])
    assert other["counters"]["not_for_me"] == ref["counters"]["not_for_me"] == 1


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


def test_browser_key_is_non_extractable_and_persists(module_page):
    out = module_page.evaluate("""async () => {
        const m = await import('/console/js/crypto.js');
        const a = await m.loadOrCreateIdentity('scribe-x');
        const b = await m.loadOrCreateIdentity('scribe-x');
        let exported = true;
        try { await crypto.subtle.exportKey('pkcs8', b.privateKey); } catch (e) { exported = false; }
        return {same: a.keyId === b.keyId, extractable: b.privateKey.extractable, exported,
                pub: m.b64encode(b.publicRaw), keyId: b.keyId};
    }""")
    assert out["same"] and not out["extractable"] and not out["exported"]
    assert out["keyId"] == env.key_id(base64.b64decode(out["pub"]))
