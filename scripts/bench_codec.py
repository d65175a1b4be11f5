"""`scripts/bench codec`: what Opus costs and buys, at 16, 24 and 32 kb/s, against PCM.

On recorded speech (Codec2's 16 kHz reference recording and the ALSA voices, as the tests
use; tests/speech.py), through the real code: scribelink/codec.py encodes and decodes,
the unit's Session seals, edge_agent/spool.py writes its segment log, the relay's Store
(SQLite) archives. Measured per audio second and scaled:

- bytes on the wire: Opus payload, sealed envelopes, MQTT PUBLISH packets (fixed header,
  topic, packet id, properties) and TLS 1.3 records (22 bytes each: header, type, tag);
- spool bytes per audio-hour (the segment log's files) and an 8-hour clinic day;
- the relay's archive: SQLite file growth per audio second, and its empty size;
- CPU per room on the unit: encode real-time factor on one core, and the estimate for a
  Pi Zero 2 W (x10, the ratio the DSP budget uses);
- intelligibility: PESQ-wb and STOI of decoded against the original, delay removed;
- the end-to-end figures (capture -> decoded in the page, live-first drain) come from
  the whole system: `--system` runs tests/console/test_console_opus.py and the spool
  bench's cut-and-drain with Opus.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import record_section

ROOT = Path(__file__).resolve().parent.parent

RATE = 16000
CHUNK = 640
UNIT = "unit-exam-1"  # the demo's unit id: 11 characters in every clear header
PI_ZERO_FACTOR = 10.0
TLS_RECORD = 5 + 1 + 16


def mqtt_publish_len(topic: str, payload: int) -> int:
    # MQTT 5 with a topic alias (edge_agent/uplink.py): an empty topic, the packet id, and
    # properties of 3 bytes (the alias); the topic itself goes once per connection
    body = 2 + 2 + 1 + 3 + payload
    rl = 1 + (body >= 128) + (body >= 16384)
    return 1 + rl + body


def measure(speech: np.ndarray, codec: str, bitrate: int) -> dict:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from cloud_relay.store import Store
    from edge_agent.session import Session, Signer
    from edge_agent.spool import Spool
    from scribelink import codec as codecs
    from scribelink import envelope as env
    from scribelink import topics

    settings = codecs.CodecSettings(codec=codec, bitrate=bitrate)
    seconds = len(speech) / RATE
    s = Session(unit_id=UNIT, scribes=[("s", "dev", X25519PrivateKey.generate().public_key())],
                recovery=None, signer=Signer(Ed25519PrivateKey.generate(), None),
                sample_rate=RATE, chunk_ms=40, started_us=1, codec=settings)
    frames, bodies = [], []
    t0 = time.process_time()
    for i in range(0, len(speech) - CHUNK + 1, CHUNK):
        _, frame = s.seal_audio(speech[i:i + CHUNK], 1 + i * 1_000_000 // RATE)
        frames.append(frame)
    seal_cpu = time.process_time() - t0
    key = s._key
    for f in frames:
        bodies.append(env.open_envelope(f, key)[1])
    # encode alone (the codec's share of the unit's CPU)
    enc = codecs.encoder_for(settings)
    t0 = time.process_time()
    for i in range(0, len(speech) - CHUNK + 1, CHUNK):
        enc.encode(speech[i:i + CHUNK])
    enc_cpu = time.process_time() - t0
    dec = codecs.decoder_for(env.CODEC_OPUS if codec == "opus" else env.CODEC_PCM_S16LE)
    t0 = time.process_time()
    out = np.concatenate([dec.decode(b, CHUNK, q).pcm for q, b in enumerate(bodies)])
    dec_cpu = time.process_time() - t0
    n = len(frames)
    topic = topics.unit_topic(UNIT, topics.AUDIO)
    frame_bytes = sum(len(f) for f in frames)
    mqtt = sum(mqtt_publish_len(topic, len(f)) for f in frames)
    with tempfile.TemporaryDirectory() as d:
        sp = Spool(Path(d) / "spool", fsync_interval_s=3600)
        sp.put_many([{"topic": topic, "payload": f, "kind": "audio", "session": s.hex,
                      "seq": q, "audio_ms": 40} for q, f in enumerate(frames)])
        sp.close()
        spool_bytes = sum(p.stat().st_size for p in (Path(d) / "spool").iterdir())
        (Path(d) / "relay").mkdir()
        st = Store.open("", str(Path(d) / "relay"))
        st.close()
        empty = _dir_bytes(Path(d) / "relay")
        st = Store.open("", str(Path(d) / "relay"))
        for q, f in enumerate(frames):
            st.append(UNIT, s.hex, "audio", q, f)
        st.pack(st.pack_candidates())  # at rest: what the relay's writer does after 40 s
        st.close()
        relay_bytes = _dir_bytes(Path(d) / "relay")
    from pesq import pesq
    from pystoi import stoi
    from speech_material import delay_removed

    ref, got, lag = delay_removed(speech[:len(out)], out)
    return {
        "codec": codec, "bitrate": bitrate if codec == "opus" else 256000,
        "payload_Bps": sum(len(b) for b in bodies) / seconds,
        "frame_Bps": frame_bytes / seconds,
        "wire_kbps": (mqtt + n * TLS_RECORD) * 8 / seconds / 1000,
        "spool_MB_per_h": spool_bytes / seconds * 3600 / 1e6,
        "relay_Bps": (relay_bytes - empty) / seconds, "relay_empty": empty,
        "enc_rtf": enc_cpu / seconds, "seal_rtf": seal_cpu / seconds, "dec_rtf": dec_cpu / seconds,
        "pesq": float(pesq(RATE, ref, got, "wb")), "stoi": float(stoi(ref, got, RATE)),
        "delay_ms": lag / RATE * 1000,
    }


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.iterdir() if p.is_file())


def whole_system() -> dict:
    """Capture -> decoded in the page (the Opus console test) and the live-first drain."""
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "SCRIBELINK_BENCH_OUT": d}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x",
                            "tests/console/test_console_opus.py"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=False)
        lat = Path(d) / "opus_audio_latency.json"
        if r.returncode != 0 or not lat.exists():
            print(r.stdout[-3000:], file=sys.stderr)
            raise SystemExit("bench codec: the Opus console test failed")
        out["page"] = json.loads(lat.read_text())
    # the spool bench's cut-and-drain, with Opus (it uses the tests' TCP proxy)
    code = ("import json, bench_spool; "
            "print(json.dumps(bench_spool.system(cut_s=60, tail_s=20, codec='opus')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT / 'tests'}"},
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        print(r.stderr[-3000:], file=sys.stderr)
        raise SystemExit("bench codec: the cut-and-drain run failed")
    out["drain"] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench codec")
    p.add_argument("--seconds", type=float, default=60.0, help="seconds of recorded speech")
    p.add_argument("--system", action="store_true",
                   help="also the whole-system figures (Chromium, a 60 s link cut): ~3 min")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    from speech_material import recorded_speech

    speech = recorded_speech(args.seconds)
    rows = [measure(speech, "pcm_s16le", 24000)]
    rows += [measure(speech, "opus", br) for br in (16000, 24000, 32000)]
    table = render(rows)
    sysfig = whole_system() if args.system else None
    if sysfig:
        print(json.dumps(sysfig))
        pg, dr = sysfig["page"], sysfig["drain"]
        table += (
            "\n\nWhole system, Opus 24 kb/s, 40 ms chunks (loopback; mosquitto with mTLS, the "
            "relay, headless Chromium decoding with WebCodecs):\n\n| measure | value | budget |\n"
            "|---|---|---|\n"
            f"| capture -> decoded in the page, p50 / p95 / max ({pg['n']} chunks) | "
            f"{pg['p50_ms']:.0f} / {pg['p95_ms']:.0f} / {pg['max_ms']:.0f} ms (includes the "
            "40 ms chunk) | p95 <= 150 ms |\n"
            f"| live-first drain after a 60 s cut | {dr['backlog_s']:.0f} s of audio in "
            f"{dr['drain_s']:.2f} s -> {dr['drain_x']:.0f}x real time | "
            ">= 30x |\n"
            f"| live latency while draining, p95 | {dr['during_p95']:.0f} ms | |")
    print(table)
    if not args.no_record:
        record_section("codec", "Opus against PCM (`scripts/bench codec`)", preamble(args)
                       + table + f"\n\nMeasured {time.strftime('%Y-%m-%d')} with "
                       f"`scripts/bench codec --seconds {args.seconds:.0f}"
                       + (" --system" if args.system else "") + "`.")
    return 0


def preamble(args) -> str:
    return (
        f"{args.seconds:.0f} s of recorded speech (Codec2's reference recording and the ALSA "
        "voices), 40 ms chunks, unit id `unit-exam-1` (11 characters in every clear header). "
        "Opus: VOIP application, wideband, VBR, complexity 9, 20 ms frames, FEC and DTX off. "
        "Wire: sealed envelopes in MQTT 5 PUBLISH packets in TLS 1.3 records (TCP/IP not "
        "counted), the topic as an alias. Spool: the unit's segment log as written. Relay: "
        "SQLite growth of the store with the frames packed into the archive's segments "
        "(docs/archive.md). CPU: one core of this machine; "
        "the Pi Zero 2 W column is x10. PESQ-wb and STOI: decoded against the original, "
        "delay removed.\n\n")


def render(rows: list[dict]) -> str:
    head = ("| codec | payload B/s | sealed B/s | on the wire kb/s | spool MB per audio-hour "
            "(8 h) | relay archive B/s | encode RTF (Pi Zero 2 W est.) | decode RTF | PESQ-wb "
            "| STOI | codec delay ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        name = "PCM s16le" if r["codec"] != "opus" else f"Opus {r['bitrate'] // 1000} kb/s"
        lines.append(
            f"| {name} | {r['payload_Bps']:.0f} | {r['frame_Bps']:.0f} | {r['wire_kbps']:.1f} | "
            f"{r['spool_MB_per_h']:.1f} ({8 * r['spool_MB_per_h']:.0f}) | {r['relay_Bps']:.0f} | "
            f"{r['enc_rtf']:.4f} ({r['enc_rtf'] * PI_ZERO_FACTOR:.3f}) | {r['dec_rtf']:.4f} | "
            f"{r['pesq']:.2f} | {r['stoi']:.3f} | {r['delay_ms']:.1f} |")
    empty = rows[0]["relay_empty"]
    return head + "\n".join(lines) + (
        f"\n\nThe relay's empty database is {empty / 1000:.0f} kB (schema pages); a 20 s demo "
        f"session adds 20 x the archive rate to it.")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
