"""Helpers for relay tests: sealed frames from a real unit session, and a scribe that reads
the raw WebSocket stream (so duplicates are counted, not hidden by a receiver's dedupe)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import websockets
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge_agent.session import Session, Signer
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import scribews


def unit_session(unit_id: str, scribe_id: str = "s1") -> Session:
    """A well-formed session (the relay routes on clear headers; it checks no signature:
    the receivers do, and these tests read the raw stream)."""
    key = X25519PrivateKey.generate().public_key()
    return Session(unit_id=unit_id, scribes=[(scribe_id, "dev", key)], recovery=None,
                   signer=Signer(Ed25519PrivateKey.generate(), None),
                   sample_rate=16000, chunk_ms=40, started_us=1)


def sealed_chunks(s: Session, n: int, first: int = 0) -> list[bytes]:
    return [s.seal_audio(np.full(640, i % 3000, dtype=np.int16), 1 + i * 40_000)[1]
            for i in range(first, first + n)]


class RawScribe:
    """Follows /ws on a list of relays (the next one when the current dies), resuming by
    cursor, and records every frame as received: (kind, session, seq, cursor). With `batch`
    it asks for batched binary frames, as the console does; `binary_messages` counts the
    WebSocket messages those frames came in."""

    def __init__(self, urls: list[str], token: str, cursor: int = 0, *,
                 batch: bool = True) -> None:
        self.urls = urls
        self.token = token
        self.cursor = cursor
        self.batch = batch
        self.binary_messages = 0
        self.frames: list[tuple[str, str, int, int]] = []
        self.statuses: list[dict] = []
        self.connects: list[str] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> RawScribe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def audio_seqs(self) -> list[int]:
        with self.lock:
            return [f[2] for f in self.frames if f[0] == "audio"]

    def kinds(self) -> list[str]:
        with self.lock:
            return [f[0] for f in self.frames]

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            url = self.urls[i % len(self.urls)].replace("http", "ws", 1) + "/ws"
            try:
                async with websockets.connect(url, max_size=2**21, compression=None,
                                              open_timeout=3) as sock:
                    await sock.send(json.dumps(scribews.Hello(
                        token=self.token, cursor=self.cursor, batch=self.batch).to_dict()))
                    welcome = json.loads(await sock.recv())
                    assert welcome["type"] == "welcome", welcome
                    self.connects.append(url)
                    while not self._stop.is_set():
                        try:
                            msg = await asyncio.wait_for(sock.recv(), 0.2)
                        except TimeoutError:
                            continue
                        self._record(msg)
            except (TimeoutError, OSError, websockets.ConnectionClosed):
                i += 1  # this relay is gone: the next one, from our cursor
                await asyncio.sleep(0.2)

    def _record(self, msg) -> None:
        with self.lock:
            if isinstance(msg, bytes):
                self.binary_messages += 1
                for cursor, envelope in scribews.parse_binary(msg):
                    h, _ = env.parse_header(envelope)
                    assert cursor > self.cursor, f"cursor went back: {cursor} after {self.cursor}"
                    self.cursor = cursor
                    self.frames.append((h.type_name, h.session_hex, h.seq, cursor))
                return
            item = json.loads(msg)
            if item.get("type") == "unit_status":
                self.statuses.append(item)
                return
            if "cursor" in item:
                assert item["cursor"] > self.cursor
                self.cursor = item["cursor"]
                self.frames.append((item["type"], item.get("session", ""),
                                    item.get("first_seq", 0), item["cursor"]))


def wait_until(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def open_message(s: Session) -> bytes:
    return msgs.dumps(s.open_message())
