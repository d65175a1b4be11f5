"""`scripts/bench spool`: the spool and the catch-up.

1. Spool write path (in process): throughput, and bytes written to the medium per hour
   of audio at 40 ms chunks in steady state (put, publish, ack), against a plain SQLite
   WAL outbox doing the same (why the spool is a segment log: docs/spool.md).
2. The whole system on loopback (scripts/demo with a TCP proxy the bench cuts): capture
   -> scribe latency when live, the backlog's drain rate after a cut, and live latency
   while the backlog drains.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import record_section

ROOT = Path(__file__).resolve().parent.parent

CHUNK_BYTES = 1280 + 70  # 40 ms of 16 kHz mono int16, plus header and tag


def wchar() -> int:
    with open("/proc/self/io") as io_stats:
        for line in io_stats:
            if line.startswith("wchar"):
                return int(line.split()[1])
    return 0


def spool_write(seconds_audio: float) -> dict:
    from edge_agent.spool import Spool

    n = int(seconds_audio / 0.04)
    payload = os.urandom(CHUNK_BYTES)
    with tempfile.TemporaryDirectory() as d:
        sp = Spool(Path(d), fsync_interval_s=1.0)
        w0, t0 = wchar(), time.perf_counter()
        inflight: list[int] = []
        for i in range(n):
            inflight += sp.put_many([{"topic": "sl/v1/unit/u/audio", "payload": payload,
                                      "kind": "audio", "session": "ab" * 16, "seq": i,
                                      "audio_ms": 40, "input_end": i * 640}])
            sp.pending(64)
            while len(inflight) > 32:
                sp.ack(inflight.pop(0))
        sp.close()
        el, written = time.perf_counter() - t0, wchar() - w0
        # raw append throughput, nothing else
        sp = Spool(Path(d) / "raw", fsync_interval_s=1.0)
        t1 = time.perf_counter()
        for i in range(n):
            sp.put_many([{"topic": "t", "payload": payload, "kind": "audio", "session": "ab" * 16,
                          "seq": i, "audio_ms": 40}])
        raw = time.perf_counter() - t1
        sp.close()
    hours = seconds_audio / 3600
    return {"mb_per_hour": written / hours / 1e6, "amplification": written / (n * CHUNK_BYTES),
            "steady_s_per_audio_h": el / hours, "puts_per_s": n / raw,
            "mb_per_s": n * CHUNK_BYTES / raw / 1e6}


def sqlite_write(seconds_audio: float) -> dict:
    n = int(seconds_audio / 0.04)
    payload = os.urandom(CHUNK_BYTES)
    with tempfile.TemporaryDirectory() as d:
        db = sqlite3.connect(Path(d) / "o.db", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE o (id INTEGER PRIMARY KEY, topic TEXT, payload BLOB, "
                   "seq INTEGER, created INTEGER)")
        w0 = wchar()
        ids: list[int] = []
        last_ckpt = time.monotonic()
        for i in range(n):
            cur = db.execute("INSERT INTO o(topic,payload,seq,created) VALUES (?,?,?,?)",
                             ("t", payload, i, i))
            ids.append(cur.lastrowid)
            while len(ids) > 32:
                db.execute("DELETE FROM o WHERE id=?", (ids.pop(0),))
            if time.monotonic() - last_ckpt > 1.0:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                last_ckpt = time.monotonic()
        written = wchar() - w0
        db.close()
    return {"mb_per_hour": written / (seconds_audio / 3600) / 1e6,
            "amplification": written / (n * CHUNK_BYTES)}


def system(cut_s: float, tail_s: float, codec: str = "pcm") -> dict:
    from support import TcpProxy, random_multichannel, write_wav

    from cloud_relay.broker import free_port

    seconds = 5 + cut_s + tail_s
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        write_wav(d / "in.wav", random_multichannel(seconds, channels=4, seed=3))
        bport = free_port()
        proxy = TcpProxy(bport)
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts/demo"), "--headless", "--dsp", "off",
             "--input", str(d / "in.wav"), "--seconds", str(seconds), "--record-dir",
             str(d / "rec"), "--broker-port", str(bport), "--unit-broker-url",
             f"mqtts://127.0.0.1:{proxy.port}", "--latency-log", "--codec", codec],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        log = d / "rec" / "latency.log"
        while not log.exists() or log.stat().st_size == 0:
            time.sleep(0.05)
        time.sleep(5)
        cut_at = time.time_ns() // 1000
        proxy.cut()
        time.sleep(cut_s)
        proxy.restore()
        rc = proc.wait(600)
        proxy.close()
        rows = np.array([[int(v) for v in line.split()[1:]] for line in log.read_text().split("\n")
                         if line.strip()], dtype=np.int64)
    if rc != 0:
        raise SystemExit("bench spool: the demo failed")
    cap, arr = rows[:, 1], rows[:, 2]
    lat_ms = (arr - cap) / 1000.0
    live_before = lat_ms[cap + 40_000 < cut_at]
    # the link is back when the first chunk sealed during the cut arrives; everything
    # sealed before that is backlog, everything after is live
    back_at = arr[cap >= cut_at].min()
    backlog = (cap >= cut_at) & (cap + 40_000 < back_at)
    b_last = arr[backlog].max()
    drain_s = (b_last - back_at) / 1e6
    backlog_audio_s = backlog.sum() * 0.04
    during = (cap + 40_000 >= back_at) & (arr <= b_last)
    return {
        "live_p50": float(np.percentile(live_before, 50)),
        "live_p95": float(np.percentile(live_before, 95)),
        "backlog_s": backlog_audio_s,
        "drain_s": drain_s,
        "drain_x": backlog_audio_s / max(drain_s, 1e-3),
        "during_n": int(during.sum()),
        "during_p50": float(np.percentile(lat_ms[during], 50)) if during.any() else float("nan"),
        "during_p95": float(np.percentile(lat_ms[during], 95)) if during.any() else float("nan"),
        "during_max": float(lat_ms[during].max()) if during.any() else float("nan"),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench spool")
    p.add_argument("--audio-minutes", type=float, default=10.0)
    p.add_argument("--cut-s", type=float, default=120.0)
    p.add_argument("--tail-s", type=float, default=15.0)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    sec = args.audio_minutes * 60
    w = spool_write(sec)
    q = sqlite_write(sec)
    s = system(args.cut_s, args.tail_s)
    table = "\n".join([
        "| measure | value | budget |",
        "|---|---|---|",
        f"| spool append throughput | {w['puts_per_s']:,.0f} chunks/s "
        f"({w['mb_per_s']:.1f} MB/s) | ≥ 25 chunks/s |",
        f"| bytes written per audio-hour, segment log (ours) | {w['mb_per_hour']:.0f} MB "
        f"({w['amplification']:.2f}× the sealed audio) | SD-card friendly |",
        f"| bytes written per audio-hour, SQLite WAL outbox (for comparison) | "
        f"{q['mb_per_hour']:.0f} MB ({q['amplification']:.1f}×) | |",
        f"| capture → scribe, live, p50 / p95 | {s['live_p50']:.0f} / {s['live_p95']:.0f} ms "
        "(includes the 40 ms chunk) | p95 ≤ 120 ms |",
        f"| backlog after a {args.cut_s:.0f} s cut (+ reconnect backoff) | "
        f"{s['backlog_s']:.0f} s of audio | |",
        f"| drain | {s['drain_s']:.2f} s → {s['drain_x']:.0f}× real time | ≥ 30× |",
        f"| live latency while draining, p50 / p95 / max ({s['during_n']} chunks) | "
        f"{s['during_p50']:.0f} / {s['during_p95']:.0f} / {s['during_max']:.0f} ms "
        "| p95 ≤ 120 ms |",
    ])
    print(table)
    if not args.no_record:
        record_section("spool", "Spool and catch-up (`scripts/bench spool`)",
                       "Write path: in process, 40 ms chunks, steady state (append, read for "
                       "publish, ack), bytes counted by the kernel (`wchar`). System: loopback, "
                       "`scripts/demo --dsp off` with a TCP proxy between unit and broker that "
                       f"the bench cuts for {args.cut_s:.0f} s.\n\n" + table
                       + f"\n\nMeasured {time.strftime('%Y-%m-%d')} with `scripts/bench spool`.")
    return 0
