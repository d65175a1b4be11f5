"""`scripts/bench sizes`: what a room costs in bytes, on real runs of the whole system.

Issue 17's bars: the relay's data for `scripts/demo --headless --seconds 20 --dsp off --codec
opus --input X.wav --record-dir D` is at most 4,000 bytes per second of input (everything
under `D/relay/`), with `D/scribe.wav` against channel 0 of X at PESQ-wb >= 3.5 and STOI
>= 0.95; and the budgets in ARCHITECTURE.md: Opus wideband <= 32 kb/s per room on the
wire, an 8-hour day <= 100 MB of spool. X is recorded speech nobody here wrote (Codec2's
reference recording and the ALSA voices, scripts/speech_material.py; channel 1 is another
"mic": a delayed, quieter copy).

Per bitrate, two runs of scripts/demo (mosquitto with mTLS, the unit agent, the relay,
the reference scribe client), the unit reaching the broker through a counting TCP proxy
(tests/support.py `TcpProxy`):

1. the issue's command as written: the relay's directory after the run, the scribe's
   recording scored, and the unit's upload as forwarded (TLS records, everything in
   them; TCP/IP headers not counted): over the whole run (TLS handshake, session
   messages, status included) and in steady state (the slope over the middle of the run);
2. the same with the link cut for most of the run: how fast the spool grows while it
   holds everything (bytes of its files per second of audio), scaled to 8 hours.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from bench_common import record_section

ROOT = Path(__file__).resolve().parent.parent
SECONDS = 20
CHUNK_MS = 40


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def _demo(args: list[str], timeout: float = 300) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "scripts/demo"), "--headless",
                             "--dsp", "off", "--no-puck", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        print(out[-3000:], file=sys.stderr)
        raise SystemExit("bench sizes: the demo failed")


def _frames(relay_dir: Path) -> list[bytes]:
    from cloud_relay.store import Store

    st = Store.open("", str(relay_dir))
    try:
        sessions = [r[0] for r in st.db.query("SELECT session FROM sessions")]
        out = []
        for s in sessions:
            out += [f[2] for f in st.sealed(s, "audio", 0, 10**6)]
        return out
    finally:
        st.db.close()  # read only: no vacuum, nothing changed


def run_live(x_wav: Path, work: Path, bitrate: int, codec: str, chunk_ms: int) -> dict:
    """The issue's command; the unit's upload counted on the way."""
    from support import TcpProxy, read_wav

    from cloud_relay.broker import free_port

    bport = free_port()
    proxy = TcpProxy(bport)
    rec = work / f"live-{codec}-{bitrate}-{chunk_ms}"
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), proxy.upstream_bytes))
            time.sleep(0.25)

    threading.Thread(target=sample, daemon=True).start()
    p = _demo(["--seconds", str(SECONDS), "--codec", codec, "--bitrate", str(bitrate),
               "--chunk-ms", str(chunk_ms), "--input", str(x_wav), "--record-dir", str(rec),
               "--broker-port", str(bport),
               "--unit-broker-url", f"mqtts://127.0.0.1:{proxy.port}"])
    try:
        _wait(p)
    finally:
        stop.set()
        proxy.close()
    relay_bytes = _dir_bytes(rec / "relay")
    frames = _frames(rec / "relay")
    from scribelink import envelope as env

    bodies = [len(f) - env.parse_header(f)[1] - env.TAG_LEN for f in frames]
    # steady state: the slope of the upload over the middle of the streaming (from the
    # first second after it starts to a second before the end of the input)
    t = np.array([s[0] for s in samples])
    b = np.array([s[1] for s in samples], dtype=float)
    moving = np.nonzero(b > b[0])[0]
    t0 = t[moving[0]] + 2.0
    mid = (t >= t0) & (t <= t0 + SECONDS - 5)
    slope = np.polyfit(t[mid], b[mid], 1)[0] if mid.sum() > 4 else float("nan")
    from pesq import pesq
    from pystoi import stoi
    from speech_material import delay_removed

    x = read_wav(x_wav)[:, 0]
    got = read_wav(rec / "scribe.wav")[:, 0]
    ref, dec, _lag = delay_removed(x, got)
    import sqlite3

    db = sqlite3.connect(rec / "relay" / "relay.db")
    status = max(len(r[0] or "") for r in db.execute("SELECT status_json FROM units"))
    db.close()
    return {
        "codec": codec, "bitrate": bitrate, "chunk_ms": chunk_ms, "chunks": len(frames),
        "status_bytes": status,
        "relay_Bps": relay_bytes / SECONDS, "relay_bytes": relay_bytes,
        "payload_Bps": sum(bodies) / SECONDS, "sealed_Bps": sum(map(len, frames)) / SECONDS,
        "wire_total_kbps": proxy.upstream_bytes * 8 / SECONDS / 1000,
        "wire_steady_kbps": slope * 8 / 1000,
        "pesq": float(pesq(16000, ref, dec, "wb")), "stoi": float(stoi(ref, dec, 16000)),
    }


def run_offline(x_wav: Path, work: Path, bitrate: int, codec: str, chunk_ms: int,
                seconds: int) -> dict:
    """The link cut from the start: the spool's growth while it holds everything."""
    from support import TcpProxy

    from cloud_relay.broker import free_port

    bport = free_port()
    proxy = TcpProxy(bport)
    rec, spool = (work / f"off-{codec}-{bitrate}-{chunk_ms}",
                  work / f"spool-{codec}-{bitrate}-{chunk_ms}")
    p = _demo(["--seconds", str(seconds), "--codec", codec, "--bitrate", str(bitrate),
               "--chunk-ms", str(chunk_ms),
               "--input", str(x_wav), "--record-dir", str(rec), "--broker-port", str(bport),
               "--unit-broker-url", f"mqtts://127.0.0.1:{proxy.port}",
               "--spool-dir", str(spool)])
    try:
        # the unit gets its session assigned over the link: cut it once audio is spooled
        deadline = time.monotonic() + 60
        while not (spool.exists() and _dir_bytes(spool) > 0):
            if time.monotonic() > deadline:
                raise SystemExit("bench sizes: the unit never spooled anything")
            time.sleep(0.05)
        time.sleep(1.0)
        proxy.cut()
        a_t, a_b = time.monotonic(), _dir_bytes(spool)
        time.sleep(seconds - 6)
        b_t, b_b = time.monotonic(), _dir_bytes(spool)
        proxy.restore()
        _wait(p)
    finally:
        proxy.close()
    per_s = (b_b - a_b) / (b_t - a_t)
    return {"spool_Bps": per_s, "spool_8h_MB": per_s * 8 * 3600 / 1e6}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="scripts/bench sizes")
    ap.add_argument("--bitrates", default="12000,16000,24000,16000@60",
                    help="Opus bitrates to run, b/s, comma-separated; BITRATE@MS also sets "
                         "the chunk length (default 40 ms)")
    ap.add_argument("--offline-seconds", type=int, default=30)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    if importlib.util.find_spec("support") is None:
        # the counting proxy and the WAV helpers are the tests' (tests/support.py): run
        # there, as bench_codec runs the spool bench
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'scripts'}:{ROOT / 'tests'}"}
        return subprocess.run([sys.executable, str(Path(__file__)), *argv], cwd=ROOT,
                              env=env, check=False).returncode
    from speech_material import recorded_speech
    from support import write_wav

    from scribelink import codec as codecs

    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        speech = recorded_speech(max(SECONDS, args.offline_seconds))
        x = np.stack([speech, np.roll(speech, 41) // 2], axis=1)
        write_wav(work / "X.wav", x)
        for spec in args.bitrates.split(","):
            br, _, ms = spec.partition("@")
            br, ms = int(br), int(ms or CHUNK_MS)
            r = run_live(work / "X.wav", work, br, "opus", ms)
            r.update(run_offline(work / "X.wav", work, br, "opus", ms, args.offline_seconds))
            print(json.dumps(r), flush=True)
            rows.append(r)
    table = render(rows, codecs.DEFAULT_BITRATE)
    print(table)
    if not args.no_record:
        record_section("sizes", "What a room costs in bytes (`scripts/bench sizes`)",
                       preamble() + table + f"\n\nMeasured {time.strftime('%Y-%m-%d')} with "
                       f"`scripts/bench sizes --bitrates {args.bitrates}`.")
    return 0


def preamble() -> str:
    return (
        'Real runs of `scripts/demo --headless --seconds 20 --dsp off --codec opus --bitrate B '
        "--input X.wav --record-dir D` (issue 17's command), X = recorded speech nobody here "
        "wrote (Codec2's reference recording, the ALSA voices), 40 ms chunks unless the row "
        'says otherwise, unit id `unit-exam-1`. **Relay**: every byte under `D/relay/` after '
        "the run, per second of input (the SQLite store, schema and all). **Wire**: the unit's "
        'upload as a TCP proxy between unit and broker forwards it (TLS 1.3 records with the '
        'MQTT 5 packets in them; TCP/IP headers not counted); *whole run* includes the TLS '
        "handshake with certificates, the session's open and close and the unit's status, "
        '*steady* is the slope over the middle of the stream (what a long encounter costs). '
        '**Spool**: a second run with the link cut once the session is open: growth of the '
        "spool's files per second while it holds everything, times 8 hours. PESQ-wb and STOI: "
        '`D/scribe.wav` against channel 0 of X, delay removed.\n\n')


def render(rows: list[dict], default: int) -> str:
    head = ("| Opus, chunk | payload B/s | sealed B/s | relay B/s (bar 4,000) | wire kb/s, steady "
            "(whole run) (budget 32) | spool MB per 8 h (budget 100) | PESQ-wb (>= 3.5) | "
            "STOI (>= 0.95) |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        name = f"{r['bitrate'] // 1000} kb/s, {r['chunk_ms']} ms" + (
            " (default)" if r["bitrate"] == default and r["chunk_ms"] == CHUNK_MS else "")
        lines.append(
            f"| {name} | {r['payload_Bps']:.0f} | {r['sealed_Bps']:.0f} | "
            f"{r['relay_Bps']:.0f} | {r['wire_steady_kbps']:.1f} ({r['wire_total_kbps']:.1f}) "
            f"| {r['spool_8h_MB']:.0f} | {r['pesq']:.2f} | {r['stoi']:.3f} |")
    forty = [r for r in rows if r["chunk_ms"] == CHUNK_MS]
    from edge_agent.core import STATUS_HEARTBEAT_S  # steady: unchanged, so a heartbeat

    status_Bps = np.mean([r["status_bytes"] + 11 + 22 for r in forty]) / STATUS_HEARTBEAT_S
    per_chunk = np.mean([(r["wire_steady_kbps"] * 1000 / 8 - status_Bps - r["sealed_Bps"])
                         / (1000 / CHUNK_MS) for r in forty])
    return head + "\n".join(lines) + (
        "\n\nWhere the upload goes at 40 ms chunks (25 a second): the sealed envelope adds "
        "76 bytes to each chunk's Opus payload (a 60-byte clear header with an 11-character "
        f"unit id, and the 16-byte GCM tag); MQTT and TLS add {per_chunk:.0f} more on the "
        "wire (a PUBLISH with a topic alias: 11 bytes; a TLS 1.3 record: 22): "
        f"{(76 + per_chunk) * 25 * 8 / 1000:.1f} kb/s before any audio. The unit's status "
        f"({np.mean([r['status_bytes'] for r in forty]):.0f} bytes of JSON, sent when it "
        f"changes and at least every {STATUS_HEARTBEAT_S:.0f} s: in a steady encounter every "
        f"{STATUS_HEARTBEAT_S:.0f} s) is another {status_Bps * 8 / 1000:.1f} kb/s; it was "
        "4.5 kb/s when the unit sent it every second.")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
