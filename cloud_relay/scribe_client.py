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
import json
import logging
import os
import signal
import sys
import time
import wave
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloud_relay.receiver import Receiver, SessionState, now_us
from scribelink import envelope as env
from scribelink import messages as msgs
from scribelink import relayurl, scribews, trust
from scribelink.logfmt import q

log = logging.getLogger("scribe_client")

TRUST_REFRESH_S = 60.0  # how often the signed revocation list is fetched again


# ---------------------------------------------------------------------- files and keys


def _load_or_create(path: Path, make):
    if path.exists():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    key = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


def load_or_create_key(path: Path) -> X25519PrivateKey:
    """The device's HPKE key: session keys are wrapped to it."""
    key = _load_or_create(path, X25519PrivateKey.generate)
    assert isinstance(key, X25519PrivateKey)
    return key


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The device's signing key: it signs cue replies and names the device."""
    key = _load_or_create(path, Ed25519PrivateKey.generate)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def pinned_authority(path: Path, offered_b64: str | None) -> Ed25519PublicKey:
    """The clinic authority this client trusts: pinned at first use (and printed, to
    compare with what the clinic's admin shows), and never silently replaced."""
    if path.exists():
        pinned = path.read_text().strip()
        if offered_b64 is not None and offered_b64 != pinned:
            raise RuntimeError(
                f"the relay now names another clinic authority than the one pinned in {path}: "
                "refusing (if the clinic really changed it, delete that file after checking "
                "the new fingerprint with the clinic's admin)")
        return trust.load_ed25519(pinned)
    if offered_b64 is None:
        raise RuntimeError("no clinic authority: pass --authority or sign in to a relay "
                           "that has one")
    key = trust.load_ed25519(offered_b64)
    path.write_text(offered_b64 + "\n")
    log.warning("event=authority_pinned fingerprint=%s path=%s",
                trust.fingerprint(trust.ed25519_raw(key)).replace(" ", ""), q(path))
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
            f = open(part, "wb")  # noqa: SIM115 (open across chunks; closed in close())
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
        self.sign_key = load_or_create_signing_key(Path(args.key + ".sign"))
        self.device = trust.key_id(trust.ed25519_raw(self.sign_key))
        self.wav = WavSink(Path(args.wav)) if args.wav else None
        self.events = (
            open(args.events, "a", buffering=1) if args.events else None  # noqa: SIM115 (closed in close())
        )
        self.latency_log = (
            open(args.latency_log, "a") if args.latency_log else None  # noqa: SIM115 (closed in close())
        )
        self.authority: Ed25519PublicKey | None = (
            trust.load_ed25519(Path(args.authority).read_text().strip()) if args.authority
            else None)
        self.revocations = trust.Revocations()
        self._trust_at = 0.0
        self.receiver: Receiver | None = None
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
            assert self.receiver is not None  # it is the receiver that hands us audio
            self.latency_log.write(f"{s.session[:12]} {header.seq} {header.capture_us} "
                                   f"{self.receiver.last_arrival_us}"
                                   "\n")

    def _record(self, rec: dict) -> None:
        if self.events is not None:
            self.events.write(json.dumps(rec, sort_keys=True) + "\n")
        if rec["type"] == "event" and rec.get("kind") == "cue":
            log.info("event=cue unit=%s cue_id=%s", rec["unit"], rec.get("cue_id"))
            s = self.receiver.sessions.get(rec["session"]) if self.receiver else None
            if self.args.ack_cues and s is not None:
                # sealed with the session key and signed by this device: the relay only
                # carries it (docs/trust.md)
                sealed = trust.seal_reply(s.key, unit=rec["unit"], session_hex=rec["session"],
                                          cue_id=int(rec["cue_id"]), reply=self.args.ack_reply,
                                          at_us=now_us(), device_key=self.sign_key)
                self._acks.put_nowait(msgs.CueAck(unit=rec["unit"], session=rec["session"],
                                                  sealed=sealed).to_dict())
        if rec["type"] == "session_complete":
            log.info("event=session_complete session=%s samples=%s", rec["session"][:8],
                     rec["samples"])
            if self.wav is not None:
                self.wav.assemble()
            if rec.get("reason") == "input_complete":
                self._input_complete = True
        if self.args.exit_when_complete and self._input_complete and self.receiver and all(
                s.complete for s in self.receiver.sessions.values()):
            self.done.set()

    def _http(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        r = httpx.request(method, self.args.relay.rstrip("/") + path, json=body,
                          headers=headers, timeout=10, verify=relayurl.verify(self.args.ca_file))
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()

    def sign_in(self) -> None:
        password = Path(self.args.password_file).read_text().strip()
        self.token = self._http("POST", "/api/login",
                                {"user": self.args.user, "password": password})["token"]
        # this device's keys: the clinic authority (its admin) endorses them before any
        # unit wraps a session key to this device
        dev = self._http("PUT", "/api/me/device", {
            "enc_key": trust.b64(env.public_key_raw(self.key)),
            "sign_key": trust.b64(trust.ed25519_raw(self.sign_key)),
            "label": self.args.label, "kind": "robot" if self.args.robot else "person"})
        self._refresh_trust()
        if self.receiver is None:
            assert self.authority is not None
            self.receiver = Receiver(self.key, authority=self.authority, on_audio=self._audio,
                                     on_record=self._record,
                                     revocations=lambda: self.revocations)
        log.info("event=signed_in user=%s device=%s endorsed=%s", self.args.user, self.device,
                 dev.get("endorsed"))

    def _refresh_trust(self) -> None:
        """The pinned authority, and the latest revocations it signed (as the relay has
        them: a relay can withhold a newer list, never forge one)."""
        t = self._http("GET", "/api/trust")
        if self.authority is None:
            self.authority = pinned_authority(Path(self.args.key + ".authority"),
                                              t.get("authority"))
        elif t.get("authority") and t["authority"] != trust.b64(
                trust.ed25519_raw(self.authority)):
            log.error("event=authority_mismatch what=\"the relay names another authority than "
                      "the pinned one; only the pinned one is trusted\"")
        if t.get("revocations"):
            try:
                got = trust.verify_revocations(self.authority, t["revocations"])
            except trust.TrustError as e:
                log.error("event=revocations_rejected why=%s", json.dumps(str(e)))
            else:
                if got.serial >= self.revocations.serial:
                    self.revocations = got
        self._trust_at = time.monotonic()

    async def run(self) -> int:
        import websockets

        ws_url = self.args.relay.replace("http", "ws", 1).rstrip("/") + "/ws"
        tls = None
        if ws_url.startswith("wss://"):
            import ssl

            v = relayurl.verify(self.args.ca_file)
            tls = ssl.create_default_context(cafile=v if isinstance(v, str) else None)
        delay = 0.2
        while not self.done.is_set():
            try:
                if self.token is None or self.receiver is None:  # a sign-in that failed
                    await asyncio.to_thread(self.sign_in)      # part way is done again
                assert self.token is not None  # sign_in set it, or raised
                # sealed frames do not compress: no permessage-deflate
                async with websockets.connect(ws_url, max_size=2**21, compression=None,
                                              ssl=tls) as sock:
                    hello = scribews.Hello(token=self.token, cursor=self.cursor, batch=True)
                    await sock.send(json.dumps(hello.to_dict()))
                    delay = 0.2
                    await self._session(sock)
            except (TimeoutError, OSError, RuntimeError) as e:
                log.warning("event=relay_unreachable error=%s", q(e))
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
        assert self.receiver is not None  # made at sign-in, before any session
        sender = asyncio.create_task(self._send_acks(sock))
        try:
            while not self.done.is_set():
                try:
                    msg = await asyncio.wait_for(sock.recv(), 0.5)
                except TimeoutError:
                    self.receiver.tick()
                    if time.monotonic() - self._trust_at > TRUST_REFRESH_S:
                        await asyncio.to_thread(self._refresh_trust)
                    continue
                if isinstance(msg, bytes):
                    try:
                        frames = scribews.parse_binary(msg)
                    except scribews.FrameError as e:
                        self.receiver._error("malformed", str(e))
                        continue
                    for cursor, envelope in frames:
                        self.cursor = max(self.cursor, cursor)
                        self.receiver.envelope(envelope)
                    continue
                item = json.loads(msg)
                if "cursor" in item:
                    self.cursor = max(self.cursor, int(item["cursor"]))
                t = item.get("type")
                if t in msgs.SESSION_TYPES:
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
        c = self.receiver.counters if self.receiver else dict.fromkeys(
            ("chunks", "events", "tampered", "replayed", "malformed"), 0)
        log.info("event=stopped chunks=%d events=%d tampered=%d replayed=%d malformed=%d",
                 c["chunks"], c["events"], c["tampered"], c["replayed"], c["malformed"])
        if self.events is not None:
            self.events.write(json.dumps({"type": "counters", **c}) + "\n")
            self.events.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cloud_relay.scribe_client")
    p.add_argument("--relay", required=True, help="relay base URL, e.g. "
                   "https://relay.clinic.example (plain http:// only to this machine)")
    p.add_argument("--ca-file", help="the clinic's ca.pem, if the relay's certificate is "
                   f"from the clinic's own CA (default: ${relayurl.CA_FILE_ENV}, else the "
                   "system's trust store)")
    p.add_argument("--user", required=True)
    p.add_argument("--password-file", required=True)
    p.add_argument("--key", required=True, help="scribe private key (PEM); created if missing")
    p.add_argument("--wav", help="write decrypted audio here")
    p.add_argument("--events", help="append events here as JSON lines")
    p.add_argument("--authority", help="the clinic authority's public key (base64 raw "
                   "Ed25519); default: pinned from the relay at first sign-in, in KEY.authority")
    p.add_argument("--label", default="reference client", help="this device's name for the admin")
    p.add_argument("--robot", action="store_true",
                   help="this is a headless recorder, not a person: its replies never light "
                   "the physician's puck")
    p.add_argument("--ack-cues", action="store_true", help="acknowledge every cue")
    p.add_argument("--ack-reply", default="seen", choices=list(msgs.CUE_REPLIES),
                   help="the reply to send with --ack-cues")
    p.add_argument("--ack-delay-s", type=float, default=0.0)
    p.add_argument("--latency-log", help="benchmarks: per chunk 'session seq capture_us "
                   "arrival_us' lines")
    p.add_argument("--exit-when-complete", action="store_true",
                   help="exit once a session that ended with its input complete is whole")
    args = p.parse_args(argv)
    try:
        args.relay = relayurl.check(args.relay)
    except relayurl.InsecureRelayUrl as e:
        p.error(str(e))
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
