"""`scripts/bench puck`: button press -> cue at the scribe, on loopback, through the
whole system (real firmware under MicroPython over a pty, agent, mosquitto, relay,
scribe client). Records p50/p95 in docs/benchmarks.md."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_common import record_section

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench puck")
    p.add_argument("--presses", type=int, default=40)
    p.add_argument("--interval", type=float, default=0.8)
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    seconds = 3 + args.presses * args.interval + 3
    with tempfile.TemporaryDirectory() as d:
        rec = Path(d) / "rec"
        times = ",".join(f"{2 + i * args.interval:.2f}" for i in range(args.presses))
        r = subprocess.run([sys.executable, str(ROOT / "scripts/demo"), "--headless",
                            "--dsp", "off", "--seconds", str(seconds), "--press-at", times,
                            "--record-dir", str(rec)], cwd=ROOT, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stdout[-3000:], file=sys.stderr)
            return 1
        presses = [json.loads(line) for line in (rec / "puck.log").read_text().splitlines()
                   if line.startswith('{"press"')]
        cues = [json.loads(line) for line in (rec / "events.jsonl").read_text().splitlines()
                if '"kind": "cue"' in line]
    n = min(len(presses), len(cues))
    lat_ms = np.array([(c["recv_us"] - p["wall_us"]) / 1000
                       for p, c in zip(presses, cues, strict=False)])
    rows = [("presses", f"{len(presses)}"), ("cues at the scribe", f"{len(cues)}"),
            ("p50 (ms)", f"{np.percentile(lat_ms, 50):.1f}"),
            ("p95 (ms)", f"{np.percentile(lat_ms, 95):.1f}"),
            ("max (ms)", f"{lat_ms.max():.1f}"), ("budget p95 (ms)", "100")]
    table = "| measure | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print(table)
    if n != args.presses:
        print(f"bench puck: {args.presses} presses, {len(cues)} cues", file=sys.stderr)
    if not args.no_record:
        record_section("puck", "Cue latency: button press to scribe (`scripts/bench puck`)",
                       "Loopback, whole system: the real puck firmware on the MicroPython unix "
                       "port (puck-sim, pty), agent, mosquitto with mTLS, relay, scribe client. "
                       "From the moment the firmware classifies the press (button release) to "
                       "the decrypted cue at the scribe client.\n\n" + table
                       + f"\n\nMeasured {time.strftime('%Y-%m-%d')} with "
                       f"`scripts/bench puck --presses {args.presses}`.")
    return 0
