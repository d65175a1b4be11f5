"""A relay operator as the adversary (docs/trust.md), against the real scribe client in its
own process: it replays and reorders sealed frames, forges a session "of unit-a" with a
key of its own, injects a gap and a short close into a genuine session, and hands over
an edited session_open. The client rejects what the unit did not sign, counts it, and
the genuine stream is whole. The relay here is a small hostile server written for the
test; the clinic's authority and the unit's keys are real (tests/trustkit.py)."""

from __future__ import annotations

import json
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, WebSocket
from support import ROOT, client_device, jsonl, read_wav, wait_for
from trustkit import Clinic

from cloud_relay.broker import free_port
from edge_agent.session import Signer, gap_message
from scribelink import messages as msgs


def wire(m, cursor: int) -> str:
    return json.dumps({**json.loads(msgs.dumps(m)), "cursor": cursor})


def run_hostile(tmp_path: Path, clinic: Clinic, script: Callable) -> list[dict]:
    """Serve `script(sock, device)` as the relay's WebSocket to the real scribe client;
    returns the client's event records."""
    key_path = tmp_path / "key.pem"
    app = FastAPI()

    @app.post("/api/login")
    def login(body: dict) -> dict:
        return {"token": "t", "user": "s1", "role": "scribe", "name": "s1"}

    @app.put("/api/me/device")
    def device(body: dict) -> dict:
        return {"device": "x", "endorsed": True}

    @app.get("/api/trust")
    def trust_info() -> dict:
        return {"authority": clinic.authority.public_b64(), "revocations": None}

    @app.websocket("/ws")
    async def ws(sock: WebSocket) -> None:
        await sock.accept()
        await sock.receive_text()
        await script(sock, _device(tmp_path))
        await sock.receive_text()  # hold the socket open

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    wait_for(lambda: server.started, what="hostile relay start")
    (tmp_path / "pw").write_text("x")
    (tmp_path / "authority.pub").write_text(clinic.authority.public_b64())
    proc = subprocess.Popen([sys.executable, "-m", "cloud_relay.scribe_client", "--relay",
                             f"http://127.0.0.1:{port}", "--user", "s1", "--password-file",
                             str(tmp_path / "pw"), "--key", str(key_path), "--wav",
                             str(tmp_path / "out.wav"), "--events", str(tmp_path / "ev.jsonl"),
                             "--authority", str(tmp_path / "authority.pub"),
                             "--exit-when-complete"], cwd=ROOT)
    try:
        assert proc.wait(40) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        server.should_exit = True
    return jsonl(tmp_path / "ev.jsonl")


def _device(d: Path):
    """The client's device (its keys exist once it has signed in)."""
    wait_for(lambda: (d / "key.pem.sign").exists(), what="the client's keys")
    return client_device(d, "s1")


def test_replayed_and_reordered_frames_from_a_hostile_relay(tmp_path: Path):
    clinic = Clinic()
    unit = clinic.unit("unit-a")
    pcm = [np.full(640, 7 * i, dtype=np.int16) for i in range(12)]

    async def script(sock, device):
        s = _session(clinic, unit, device)
        frames = [s.seal_audio(p, 1 + i * 40_000)[1] for i, p in enumerate(pcm)]
        await sock.send_text(wire(s.open_message(), 1))
        order = [0, 1, 2, 1, 4, 3, 0, 5, 6, 7, 7, 8, 9, 10, 11, 4]  # 4 replays, reordered
        for n, i in enumerate(order):
            await sock.send_bytes(struct.pack(">Q", n + 2) + frames[i])
        await sock.send_text(wire(s.close_message(99, "input_complete"), 99))

    events = run_hostile(tmp_path, clinic, script)
    replays = [e for e in events if e.get("error") == "replayed"]
    assert len(replays) == 4
    assert events[-1]["type"] == "counters" and events[-1]["replayed"] == 4
    assert np.array_equal(read_wav(tmp_path / "out.wav")[:, 0], np.concatenate(pcm))


def _session(clinic: Clinic, unit, device):
    from edge_agent.session import Session

    return Session(unit_id=unit.unit, scribes=[device], recovery=None, signer=unit.signer,
                   sample_rate=16000, chunk_ms=40, started_us=1, room="Exam 1")


def test_forged_edited_cut_and_gapped_sessions_from_a_hostile_relay(tmp_path: Path):
    """What a relay (holding the scribe's public key and the transport CA) can attempt,
    and what the real client makes of it: only the unit's own words count."""
    clinic = Clinic()
    unit = clinic.unit("unit-a")
    pcm = [np.full(640, 11 * i + 1, dtype=np.int16) for i in range(10)]
    forged_words = np.full(640, 31337, dtype=np.int16)  # "no known drug allergies"

    async def script(sock, device):
        cursor = iter(range(1, 10_000))
        # 1. a session of its own, "of unit-a": its own key with unit-a's genuine binding,
        #    and one with a whole authority of its own
        relay_key = Signer(Ed25519PrivateKey.generate(), unit.binding)
        forged = _session(clinic, unit, device)
        forged.signer = relay_key
        await sock.send_text(wire(forged.open_message(), next(cursor)))
        other = Clinic()
        forged2 = _session(other, other.unit("unit-a"), device)
        await sock.send_text(wire(forged2.open_message(), next(cursor)))
        for f in (forged, forged2):
            await sock.send_bytes(struct.pack(">Q", next(cursor))
                                  + f.seal_audio(forged_words, 5)[1])
            await sock.send_text(wire(f.close_message(9, "input_complete"), next(cursor)))
        # 2. the genuine session, with an edited copy of its open sent first
        s = _session(clinic, unit, device)
        opened = json.loads(msgs.dumps(s.open_message()))
        await sock.send_text(json.dumps({**opened, "room": "Exam 9", "cursor": next(cursor)}))
        await sock.send_text(json.dumps({**opened, "cursor": next(cursor)}))
        frames = [s.seal_audio(p, 1 + i * 40_000)[1] for i, p in enumerate(pcm)]
        for f in frames[:4]:
            await sock.send_bytes(struct.pack(">Q", next(cursor)) + f)
        # 3. a gap "declared" over real audio, and the session "closed" after chunk 3
        await sock.send_text(wire(gap_message("unit-a", s.hex, "audio", 4, 9, "spool_full", 5,
                                              relay_key), next(cursor)))
        cut = {**json.loads(msgs.dumps(s.close_message(99, "input_complete"))),
               "last_audio_seq": 3}
        s.closed = False
        await sock.send_text(json.dumps({**cut, "cursor": next(cursor)}))
        # 4. a gap of 2**62 chunks: bounded before anything is allocated
        await sock.send_text(json.dumps({**json.loads(msgs.dumps(s.gap_message(
            "audio", 0, 5, "spool_age", 5))), "last_seq": 2**62, "cursor": next(cursor)}))
        for f in frames[4:]:
            await sock.send_bytes(struct.pack(">Q", next(cursor)) + f)
        await sock.send_text(wire(s.close_message(99, "input_complete"), next(cursor)))

    events = run_hostile(tmp_path, clinic, script)
    counters = events[-1]
    assert counters["type"] == "counters"
    # two forged opens, the edited open, the injected gap, the cut close
    assert counters["forged"] == 5, [e for e in events if e.get("error") == "forged"]
    assert counters["malformed"] == 1  # the 2**62 gap
    opened = [e for e in events if e["type"] == "session_open"]
    assert len(opened) == 1 and opened[0]["room"] == "Exam 1"
    got = read_wav(tmp_path / "out.wav")[:, 0]
    assert 31337 not in got
    assert np.array_equal(got, np.concatenate(pcm))  # nothing hidden, nothing cut
