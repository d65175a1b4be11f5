"""End to end through the demo: ALSA capture -> seal -> spool -> mosquitto -> relay ->
scribe client, with an input nobody tuned for, and what the relay can see."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from support import archived_frames, jsonl, random_multichannel, read_wav, run_demo, write_wav

from scribelink import envelope as env
from scribelink import messages as msgs


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo")
    x = random_multichannel(20.0, channels=4, seed=20261127)
    write_wav(d / "X.wav", x)
    rec = d / "rec"
    r = run_demo(["--headless", "--seconds", "20", "--dsp", "off", "--input", str(d / "X.wav"),
                  "--record-dir", str(rec)], timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return x, rec, r.stdout


def test_scribe_wav_equals_channel_0_sample_for_sample(demo_run):
    x, rec, _ = demo_run
    got = read_wav(rec / "scribe.wav")[:, 0]
    assert len(got) == len(x)
    assert np.array_equal(got, x[:, 0])


def test_demo_leaves_its_records(demo_run):
    _, rec, out = demo_run
    for name in ("scribe.wav", "events.jsonl", "pids.json", "ports.json", "relay"):
        assert (rec / name).exists(), name
    kinds = [e.get("kind") or e["type"] for e in jsonl(rec / "events.jsonl")]
    assert kinds[:2] == ["session_open", "session_start"]
    assert "session_end" in kinds and "session_complete" in kinds
    counters = [e for e in jsonl(rec / "events.jsonl") if e["type"] == "counters"][-1]
    assert counters["tampered"] == 0 and counters["replayed"] == 0
    assert counters["chunks"] == 20 * 1000 // 40
    assert "scribe has" in out and "session_open" in out


def _relay_files(rec: Path) -> list[Path]:
    files = [p for p in (rec / "relay").rglob("*") if p.is_file()]
    files.append(rec / "relay.log")
    return files


def test_relay_holds_no_plaintext_and_no_key(demo_run):
    x, rec, _ = demo_run
    db = sqlite3.connect(rec / "relay" / "relay.db")
    open_msg = msgs.loads(db.execute(
        "SELECT payload FROM stream WHERE kind='session_open'").fetchone()[0])
    scribe = serialization.load_pem_private_key((rec / "scribe.key").read_bytes(), None)
    assert isinstance(scribe, X25519PrivateKey)
    wrapped = msgs.wrapped_key_for(open_msg, env.key_id(env.public_key_raw(scribe)))
    session_key = env.unwrap_session_key(wrapped, scribe, open_msg["unit"],
                                         bytes.fromhex(open_msg["session"]))
    # the archive is real: the scribe's key opens what the relay stored
    [frame] = [f for _, q, f, _ in archived_frames(rec / "relay") if q == 100]
    _, body = env.open_envelope(bytes(frame), session_key)
    assert body == x[100 * 640:101 * 640, 0].tobytes()

    secrets = {
        "session key": session_key,
        "session key (hex)": session_key.hex().encode(),
        "session key (b64)": base64.b64encode(session_key),
        "scribe private key": scribe.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()),
    }
    pcm = x[:, 0].tobytes()
    # 48-byte windows of the plaintext at many offsets: any one of them on disk is a leak
    windows = [pcm[o:o + 48] for o in range(0, len(pcm) - 48, 4001)]
    windows = [w for w in windows if len(set(w)) > 8]
    assert len(windows) > 100
    blob = b"".join(p.read_bytes() for p in _relay_files(rec))
    assert len(blob) > len(pcm) // 2  # the relay did store the (sealed) session
    for name, s in secrets.items():
        assert s not in blob, f"{name} found in the relay's files"
    leaks = [w for w in windows if w in blob]
    assert not leaks, f"{len(leaks)} plaintext windows found in the relay's files"
