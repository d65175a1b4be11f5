"""The sealed envelope and session-key wrapping against the checked-in vectors."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from support import wrapped_key_for

from scribelink import envelope as env

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "envelope.json").read_text())


def _key(name: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(base64.b64decode(VECTORS[name]))


def _session_key(priv: X25519PrivateKey) -> bytes:
    m = VECTORS["session_open"]
    wrapped = wrapped_key_for(m, env.key_id(env.public_key_raw(priv)))
    assert wrapped is not None
    return env.unwrap_session_key(wrapped, priv, m["unit"], bytes.fromhex(m["session"]))


@pytest.mark.parametrize("who", ["scribe_private_key", "recovery_private_key"])
def test_every_recipient_opens_every_vector_chunk(who):
    key = _session_key(_key(who))
    assert key.hex() == VECTORS["session_key"]
    for c in VECTORS["chunks"]:
        header, body = env.open_envelope(base64.b64decode(c["frame"]), key)
        assert header.seq == c["seq"]
        assert header.unit_id == VECTORS["unit_id"]
        assert hashlib.sha256(body).hexdigest() == c["plaintext_sha256"]
        assert body == base64.b64decode(c["plaintext"])


def test_unrelated_key_cannot_open_the_session():
    m = VECTORS["session_open"]
    other = _key("unrelated_private_key")
    assert wrapped_key_for(m, env.key_id(env.public_key_raw(other))) is None
    wrapped = base64.b64decode(m["recipients"][0]["wrapped_key"])
    with pytest.raises(env.OpenError):
        env.unwrap_session_key(wrapped, other, m["unit"], bytes.fromhex(m["session"]))


def test_wrapped_key_is_bound_to_its_session():
    m = VECTORS["session_open"]
    scribe = _key("scribe_private_key")
    wrapped = wrapped_key_for(m, env.key_id(env.public_key_raw(scribe)))
    with pytest.raises(env.OpenError):
        env.unwrap_session_key(wrapped, scribe, m["unit"], bytes(16))


@pytest.mark.parametrize("case", VECTORS["tampered"], ids=lambda c: c["why"])
def test_tampered_vectors_fail_authentication(case):
    key = bytes.fromhex(VECTORS["session_key"])
    with pytest.raises(env.OpenError):
        env.open_envelope(base64.b64decode(case["frame"]), key)


def test_header_round_trip_and_clear_fields():
    frame = base64.b64decode(VECTORS["chunks"][0]["frame"])
    header, off = env.parse_header(frame)
    assert header.pack() == frame[:off]
    assert header.type == env.TYPE_AUDIO and header.codec == env.CODEC_PCM_S16LE
    assert header.sample_rate == 16000 and header.sample_count == 640
    assert header.capture_us == VECTORS["chunks"][0]["capture_us"]
    # the relay sees only the header: the plaintext is nowhere in the frame
    assert base64.b64decode(VECTORS["chunks"][1]["plaintext"])[:64] not in frame


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: b"XX" + f[2:], "magic"),
        (lambda f: f[:2] + b"\x09" + f[3:], "version"),
        (lambda f: f[:3] + b"\x07" + f[4:], "type"),
        (lambda f: f[:20], "short"),
        (lambda f: f[:-40], "match"),
    ],
)
def test_malformed_frames_get_a_clear_error(mutate, message):
    frame = base64.b64decode(VECTORS["chunks"][0]["frame"])
    with pytest.raises(env.EnvelopeError, match=message):
        env.parse_header(mutate(frame))


def test_nonces_differ_between_streams_and_sequence_numbers():
    nonces = {env.nonce_for(t, s) for t in (env.TYPE_AUDIO, env.TYPE_EVENT) for s in range(100)}
    assert len(nonces) == 200
    assert all(len(n) == 12 for n in nonces)
