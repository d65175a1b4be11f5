"""A relay operator who replays and reorders sealed frames: the real scribe client
(its own process) rejects the replays, counts them, and the stream is still whole.
The relay here is the adversary, so it is a small hostile server written for the test."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import uvicorn
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI, WebSocket

from edge_agent.session import Session
from support import ROOT, jsonl, read_wav, wait_for


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_replayed_and_reordered_frames_from_a_hostile_relay(tmp_path: Path):
    key_path = tmp_path / "key.pem"
    registered = threading.Event()
    pcm = [np.full(640, 7 * i, dtype=np.int16) for i in range(12)]
    app = FastAPI()

    @app.post("/api/login")
    def login(body: dict) -> dict:
        return {"token": "t", "user": "s1", "role": "scribe", "name": "s1"}

    @app.put("/api/me/key")
    def key(body: dict) -> dict:
        registered.set()
        return {"ok": True}

    @app.websocket("/ws")
    async def ws(sock: WebSocket) -> None:
        await sock.accept()
        await sock.receive_text()
        scribe = serialization.load_pem_private_key(key_path.read_bytes(), None)
        s = Session(unit_id="unit-a", scribes=[("s1", scribe.public_key())], recovery=None,
                    sample_rate=16000, chunk_ms=40, started_us=1)
        frames = [s.seal_audio(p, 1 + i * 40_000)[1] for i, p in enumerate(pcm)]
        await sock.send_text(json.dumps({**s.open_message(), "cursor": 1}))
        order = [0, 1, 2, 1, 4, 3, 0, 5, 6, 7, 7, 8, 9, 10, 11, 4]  # 4 replays, reordered
        for n, i in enumerate(order):
            await sock.send_bytes(struct.pack(">Q", n + 2) + frames[i])
        await sock.send_text(json.dumps({**s.close_message(99, "input_complete"), "cursor": 99}))
        await sock.receive_text()  # hold the socket open

    port = _port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    wait_for(lambda: server.started, what="hostile relay start")
    (tmp_path / "pw").write_text("x")
    proc = subprocess.Popen([sys.executable, "-m", "cloud_relay.scribe_client", "--relay",
                             f"http://127.0.0.1:{port}", "--user", "s1", "--password-file",
                             str(tmp_path / "pw"), "--key", str(key_path), "--wav",
                             str(tmp_path / "out.wav"), "--events", str(tmp_path / "ev.jsonl"),
                             "--exit-when-complete"], cwd=ROOT)
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        server.should_exit = True
    events = jsonl(tmp_path / "ev.jsonl")
    replays = [e for e in events if e.get("error") == "replayed"]
    assert len(replays) == 4
    assert events[-1]["type"] == "counters" and events[-1]["replayed"] == 4
    assert np.array_equal(read_wav(tmp_path / "out.wav")[:, 0], np.concatenate(pcm))
    time.sleep(0.1)
