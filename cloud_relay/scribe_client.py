"""Headless scribe client: the reference receiver the browser console is tested against.

`python -m cloud_relay.scribe_client --relay URL --user ID --password-file F --key K
--wav OUT.wav --events OUT.jsonl`. It registers its public key, follows the relay's
WebSocket, opens session keys with its private key, authenticates every chunk,
deduplicates on (session, stream, seq), reorders, and writes audio and events.
Tampered, replayed or malformed frames are counted and reported, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import struct
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from scribelink import codec as codecs
from scribelink import envelope as env
from scribelink import messages as msgs

log = logging.getLogger("scribe_client")

MAX_HELD_CHUNKS = 30_000  # per session reorder buffer bound (20 min of 40 ms chunks)
# A hole the stream has waited on this long without moving (later chunks held, nothing
# filling in) is given up on and counted "missing", so an undeclared loss cannot stall
# the stream forever. A unit catching up keeps the stream moving, so it never trips this;
# declared gaps skip at once.
HOLE_TIMEOUT_S = 120.0
LATE_S = 2.0  # audio arriving this much later than the session's best is "backfilled"
MAX_PENDING_UNKNOWN = 5_000


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class SessionState:
    session: str
    unit: str
    key: bytes
    sample_rate: int
    started_us: int
    next_audio: int = 0
    next_event: int = 0
    # seq -> (header, body, arrival_us, backfilled)
    held_audio: dict[int, tuple[env.Header, bytes, int, bool]] = field(default_factory=dict)
    held_events: dict[int, tuple[env.Header, bytes]] = field(default_factory=dict)
    lost_audio: set[int] = field(default_factory=set)
    seen: set[tuple[int, int]] = field(default_factory=set)
    close: dict | None = None
    samples_written: int = 0
    stalled_since: float | None = None
    best_latency_us: int | None = None
    newest_seq: int = -1  # highest audio seq received so far
    reported: bool = False  # session_complete already said
    backfill: list[int] | None = None  # [first_seq, last_seq] of the current late stretch
    decoders: dict[int, object] = field(default_factory=dict)  # codec id -> decoder

    @property
    def complete(self) -> bool:
        if self.close is None:
            return False
        last = self.close.get("last_audio_seq", -1)
        return last < 0 or self.next_audio > last


class Receiver:
    """Pure receive path: feed it relay items, it calls `on_audio` and `on_record`.

    Audio is decoded here (scribelink/codec.py), in sequence order, so `on_audio` gets
    PCM whatever the session's codec. What Opus conceals over a missing chunk is not
    passed on: a gap writes nothing."""

    def __init__(self, private_key: X25519PrivateKey, *, on_audio, on_record,
                 clock=time.monotonic, hole_timeout_s: float = HOLE_TIMEOUT_S) -> None:
        self.clock = clock
        self.hole_timeout_s = hole_timeout_s
        self.private_key = private_key
        self.key_id = env.key_id(env.public_key_raw(private_key))
        self.on_audio = on_audio  # (SessionState, header, pcm bytes: mono int16 LE)
        self.on_record = on_record  # (dict)
        self.sessions: dict[str, SessionState] = {}
        self.pending: dict[str, list[bytes]] = {}
        self.counters = {"tampered": 0, "replayed": 0, "malformed": 0, "not_for_me": 0,
                         "missing": 0, "chunks": 0, "events": 0, "late": 0}
        self.last_arrival_us = 0  # of the chunk on_audio is being called for

    # ------------------------------------------------------------------ session lifecycle

    def session_item(self, item: dict) -> None:
        try:
            m = msgs.check_session_message(item)
        except msgs.MessageError as e:
            self._error("malformed", str(e))
            return
        t = m["type"]
        if t == "session_open":
            self._open(m)
        elif t == "session_close":
            s = self.sessions.get(m["session"])
            rec = {k: m.get(k) for k in ("session", "unit", "reason", "last_audio_seq",
                                         "last_event_seq", "ended_us")}
            self.on_record({"type": "session_close", **rec, "recv_us": now_us()})
            if s is not None:
                s.close = m
                self._advance(s)
        elif t == "gap":
            s = self.sessions.get(m["session"])
            self.on_record({"type": "gap", **{k: m[k] for k in (
                "session", "unit", "stream", "first_seq", "last_seq", "reason")},
                "recv_us": now_us()})
            if s is not None and m.get("stream", "audio") == "audio":
                s.lost_audio.update(range(m["first_seq"], m["last_seq"] + 1))
                self._advance(s)

    def _open(self, m: dict) -> None:
        if m["session"] in self.sessions:
            return
        wrapped = msgs.wrapped_key_for(m, self.key_id)
        if wrapped is None:
            self.counters["not_for_me"] += 1
            self.on_record({"type": "error", "error": "session_not_wrapped_for_me",
                            "session": m["session"], "unit": m["unit"]})
            return
        try:
            key = env.unwrap_session_key(wrapped, self.private_key, m["unit"],
                                         bytes.fromhex(m["session"]))
        except env.OpenError as e:
            self._error("tampered", str(e), session=m["session"])
            return
        s = SessionState(m["session"], m["unit"], key, int(m["sample_rate"]),
                         int(m.get("started_us", 0)))
        self.sessions[s.session] = s
        self.on_record({"type": "session_open", "session": s.session, "unit": s.unit,
                        "room": m.get("room"), "started_us": s.started_us,
                        "sample_rate": s.sample_rate, "recv_us": now_us()})
        for frame in self.pending.pop(s.session, []):
            self.envelope(frame)

    # ------------------------------------------------------------------ envelopes

    def envelope(self, frame: bytes) -> None:
        try:
            header, _ = env.parse_header(frame)
        except env.EnvelopeError as e:
            self._error("malformed", str(e))
            return
        s = self.sessions.get(header.session_hex)
        if s is None:
            q = self.pending.setdefault(header.session_hex, [])
            if len(q) < MAX_PENDING_UNKNOWN:
                q.append(frame)
            return
        try:
            header, body = env.open_envelope(frame, s.key)
        except env.OpenError as e:
            self._error("tampered", str(e), session=s.session, seq=header.seq)
            return
        ident = (header.type, header.seq)
        next_seq = s.next_audio if header.type == env.TYPE_AUDIO else s.next_event
        held = s.held_audio if header.type == env.TYPE_AUDIO else s.held_events
        if ident in s.seen or header.seq < next_seq or header.seq in held:
            self._error("replayed", f"{header.type_name} seq={header.seq} already received",
                        session=s.session, seq=header.seq)
            return
        s.seen.add(ident)
        if header.type == env.TYPE_AUDIO:
            s.held_audio[header.seq] = (header, body, *self._arrival(s, header))
            if len(s.held_audio) > MAX_HELD_CHUNKS:
                self._skip_hole(s)  # memory bound reached: give up on the hole now
        else:
            s.held_events[header.seq] = (header, body)
        self._advance(s)

    def _arrival(self, s: SessionState, header: env.Header) -> tuple[int, bool]:
        """When an audio chunk arrived, and whether it is backfilled: overtaken by newer
        audio (the unit sends live first while it catches up), or much later than the
        session's best latency."""
        arrival = now_us()
        lat = arrival - header.capture_us
        if s.best_latency_us is None or lat < s.best_latency_us:
            s.best_latency_us = lat
        late = header.seq < s.newest_seq or lat - s.best_latency_us > LATE_S * 1e6
        s.newest_seq = max(s.newest_seq, header.seq)
        if late:
            self.counters["late"] += 1
        return arrival, late

    def _write_audio(self, s: SessionState, h: env.Header, body: bytes, arrival_us: int,
                     late: bool) -> None:
        self.last_arrival_us = arrival_us
        if late:
            s.backfill = [s.backfill[0] if s.backfill else h.seq, h.seq]
        elif s.backfill:
            self._end_backfill(s)
        try:
            dec = s.decoders.get(h.codec)
            if dec is None:
                dec = s.decoders[h.codec] = codecs.decoder_for(h.codec, h.sample_rate)
            pcm = dec.decode(body, h.sample_count, h.seq).pcm  # type: ignore[attr-defined]
        except codecs.CodecError as e:
            self._error("malformed", f"audio seq={h.seq}: {e}", session=s.session, seq=h.seq)
            return
        self.counters["chunks"] += 1
        self.on_audio(s, h, pcm.astype("<i2").tobytes())
        s.samples_written += h.sample_count

    def _end_backfill(self, s: SessionState) -> None:
        if s.backfill:
            first, last = s.backfill
            self.on_record({"type": "backfill", "session": s.session, "unit": s.unit,
                            "first_seq": first, "last_seq": last, "recv_us": now_us()})
            s.backfill = None

    def tick(self) -> None:
        """Give up on holes that have stalled a stream for too long (call periodically)."""
        for s in list(self.sessions.values()):
            if s.held_audio and s.stalled_since is not None and \
                    self.clock() - s.stalled_since > self.hole_timeout_s:
                self._skip_hole(s)
                self._advance(s)

    def _skip_hole(self, s: SessionState) -> None:
        self._error("missing", f"audio seq={s.next_audio} never arrived; skipped",
                    session=s.session, seq=s.next_audio)
        s.lost_audio.add(s.next_audio)
        s.stalled_since = None

    def _advance(self, s: SessionState) -> None:
        start = s.next_audio
        while True:
            if s.next_audio in s.held_audio:
                self._write_audio(s, *s.held_audio.pop(s.next_audio))
                s.next_audio += 1
            elif s.next_audio in s.lost_audio:
                s.lost_audio.discard(s.next_audio)
                s.next_audio += 1
            else:
                break
        if s.next_audio != start or not s.held_audio:
            s.stalled_since = None
        if s.held_audio and s.stalled_since is None:
            s.stalled_since = self.clock()
        while s.next_event in s.held_events:
            h, body = s.held_events.pop(s.next_event)
            s.next_event += 1
            try:
                ev = msgs.check_event(body)
            except msgs.MessageError as e:
                self._error("malformed", str(e), session=s.session)
                continue
            self.counters["events"] += 1
            self.on_record({"type": "event", "session": s.session, "unit": s.unit,
                            "seq": h.seq, **ev,
                            "t_s": round((ev["at_us"] - s.started_us) / 1e6, 3),
                            "recv_us": now_us()})
        if s.complete and s.close is not None and not s.reported:
            s.reported = True
            self._end_backfill(s)
            self.on_record({"type": "session_complete", "session": s.session,
                            "samples": s.samples_written, "reason": s.close.get("reason")})

    def _error(self, kind: str, detail: str, **ctx) -> None:
        self.counters[kind] += 1
        log.warning("event=rejected kind=%s %s", kind,
                    " ".join(f"{k}={v}" for k, v in ctx.items()))
        self.on_record({"type": "error", "error": kind, "detail": detail, **ctx,
                        "recv_us": now_us()})


# ---------------------------------------------------------------------- files and keys


def load_or_create_key(path: Path) -> X25519PrivateKey:
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, X25519PrivateKey)
        return key
    key = X25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


class WavSink:
    """Decrypted audio, one part file per session (sessions can arrive interleaved: a
    restarted unit's old session drains while its new one is live), assembled into one
    mono 16-bit WAV in session order whenever a session completes and at exit."""

    def __init__(self, path: Path, sample_rate: int = 16000) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.parts: dict[str, tuple[int, Path]] = {}
        self._files: dict[str, object] = {}

    def write(self, s: SessionState, pcm: bytes) -> None:
        f = self._files.get(s.session)
        if f is None:
            part = self.path.with_name(f".{self.path.name}.{s.session[:12]}.part")
            f = open(part, "wb")
            self._files[s.session] = f
            self.parts[s.session] = (s.started_us, part)
        f.write(pcm)  # type: ignore[attr-defined]

    def assemble(self) -> None:
        for f in self._files.values():
            f.flush()  # type: ignore[attr-defined]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with wave.open(str(tmp), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(self.sample_rate)
            for _, part in sorted(self.parts.values()):
                w.writeframes(part.read_bytes())
        tmp.replace(self.path)

    def close(self) -> None:
        self.assemble()
        for f in self._files.values():
            f.close()  # type: ignore[attr-defined]
        for _, part in self.parts.values():
            part.unlink(missing_ok=True)


# ---------------------------------------------------------------------- the client


class ScribeClient:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.key = load_or_create_key(Path(args.key))
        self.wav = WavSink(Path(args.wav)) if args.wav else None
        self.events = open(args.events, "a", buffering=1) if args.events else None
        self.latency_log = open(args.latency_log, "a") if args.latency_log else None
        self.receiver = Receiver(self.key, on_audio=self._audio, on_record=self._record)
        self.cursor = 0
        self.token: str | None = None
        self.sock = None
        self.done = asyncio.Event()
        self._acks: asyncio.Queue = asyncio.Queue()
        self._input_complete = False  # a session ended with its input complete

    def _audio(self, s: SessionState, header: env.Header, pcm: bytes) -> None:
        if self.wav is not None:
            self.wav.write(s, pcm)
        if self.latency_log is not None:
            self.latency_log.write(f"{s.session[:12]} {header.seq} {header.capture_us} "
                                   f"{self.receiver.last_arrival_us}"
                                   "\n")

    def _record(self, rec: dict) -> None:
        if self.events is not None:
            self.events.write(json.dumps(rec, sort_keys=True) + "\n")
        if rec["type"] == "event" and rec.get("kind") == "cue":
            log.info("event=cue unit=%s cue_id=%s", rec["unit"], rec.get("cue_id"))
            if self.args.ack_cues:
                self._acks.put_nowait({"type": "cue_ack", "unit": rec["unit"],
                                       "session": rec["session"], "cue_id": rec.get("cue_id"),
                                       "event_seq": rec["seq"]})
        if rec["type"] == "session_complete":
            log.info("event=session_complete session=%s samples=%s", rec["session"][:8],
                     rec["samples"])
            if self.wav is not None:
                self.wav.assemble()
            if rec.get("reason") == "input_complete":
                self._input_complete = True
        if self.args.exit_when_complete and self._input_complete and all(
                s.complete for s in self.receiver.sessions.values()):
            self.done.set()

    def _http(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = httpx.request(method, self.args.relay.rstrip("/") + path, json=body,
                          headers=headers, timeout=10)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    def sign_in(self) -> None:
        password = Path(self.args.password_file).read_text().strip()
        self.token = self._http("POST", "/api/login",
                                {"user": self.args.user, "password": password})["token"]
        pub = base64.b64encode(env.public_key_raw(self.key)).decode()
        self._http("PUT", "/api/me/key", {"public_key": pub})
        log.info("event=signed_in user=%s key_id=%s", self.args.user, self.receiver.key_id)

    async def run(self) -> int:
        import websockets

        ws_url = self.args.relay.replace("http", "ws", 1).rstrip("/") + "/ws"
        delay = 0.2
        while not self.done.is_set():
            try:
                if self.token is None:
                    await asyncio.to_thread(self.sign_in)
                # sealed frames do not compress: no permessage-deflate
                async with websockets.connect(ws_url, max_size=2**21, compression=None) as sock:
                    await sock.send(json.dumps({"type": "hello", "token": self.token,
                                                "cursor": self.cursor}))
                    delay = 0.2
                    await self._session(sock)
            except (OSError, RuntimeError, asyncio.TimeoutError) as e:
                log.warning("event=relay_unreachable error=%s", e)
            except websockets.ConnectionClosed as e:
                if e.rcvd is not None and e.rcvd.code == 4401:
                    self.token = None
                log.warning("event=ws_closed code=%s", e.rcvd.code if e.rcvd else None)
            if self.done.is_set():
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        return 0

    async def _session(self, sock) -> None:
        sender = asyncio.create_task(self._send_acks(sock))
        try:
            while not self.done.is_set():
                try:
                    msg = await asyncio.wait_for(sock.recv(), 0.5)
                except asyncio.TimeoutError:
                    self.receiver.tick()
                    continue
                if isinstance(msg, bytes):
                    if len(msg) < 8:
                        self.receiver._error("malformed", "short binary frame")
                        continue
                    self.cursor = max(self.cursor, struct.unpack(">Q", msg[:8])[0])
                    self.receiver.envelope(msg[8:])
                    continue
                item = json.loads(msg)
                if "cursor" in item:
                    self.cursor = max(self.cursor, int(item["cursor"]))
                t = item.get("type")
                if t in msgs.SESSION_KINDS:
                    self.receiver.session_item(item)
                elif t == "error":
                    raise RuntimeError(f"relay refused: {item.get('error')}")
        finally:
            sender.cancel()

    async def _send_acks(self, sock) -> None:
        while True:
            ack = await self._acks.get()
            if self.args.ack_delay_s:
                await asyncio.sleep(self.args.ack_delay_s)
            await sock.send(json.dumps(ack))

    def close(self) -> None:
        if self.wav is not None:
            self.wav.close()
        if self.latency_log is not None:
            self.latency_log.close()
        c = self.receiver.counters
        log.info("event=stopped chunks=%d events=%d tampered=%d replayed=%d malformed=%d",
                 c["chunks"], c["events"], c["tampered"], c["replayed"], c["malformed"])
        if self.events is not None:
            self.events.write(json.dumps({"type": "counters", **c}) + "\n")
            self.events.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud_relay.scribe_client")
    p.add_argument("--relay", required=True, help="relay base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--key", required=True, help="scribe private key (PEM); created if missing")
    p.add_argument("--wav", help="write decrypted audio here")
    p.add_argument("--events", help="append events here as JSON lines")
    p.add_argument("--ack-cues", action="store_true", help="acknowledge every cue")
    p.add_argument("--ack-delay-s", type=float, default=0.0)
    p.add_argument("--latency-log", help="benchmarks: per chunk 'session seq capture_us "
                   "arrival_us' lines")
    p.add_argument("--exit-when-complete", action="store_true",
                   help="exit once a session that ended with its input complete is whole")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    client = ScribeClient(args)

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, client.done.set)
        return await client.run()

    try:
        return asyncio.run(runner())
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
