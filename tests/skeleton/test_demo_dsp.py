"""`--dsp on` end to end: the scribe hears exactly the unit's array pipeline, the one
`python -m edge_agent process --cold` runs, on the demo's exam-room recording."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from support import ROOT, read_wav, run_demo

from edge_agent.dsp.pipeline import make_array_pipeline


def test_demo_with_dsp_on_delivers_the_pipeline_output(tmp_path):
    room = tmp_path / "room.wav"
    subprocess.run([sys.executable, str(ROOT / "scripts/make_exam_room.py"), str(room),
                    "--seconds", "10"], check=True)
    # PCM: the pipeline's output is compared sample for sample (Opus: test_demo_opus.py)
    r = run_demo(["--headless", "--seconds", "10", "--dsp", "on", "--codec", "pcm",
                  "--input", str(room), "--record-dir", str(tmp_path / "rec"), "--no-puck"],
                 timeout=200)
    assert r.returncode == 0, r.stdout[-3000:]
    # (--cold: the unit streams from power-on; `process` by default first listens to the
    # file's first seconds)
    subprocess.run([sys.executable, "-m", "edge_agent", "process", "--cold", str(room),
                    str(tmp_path / "offline.wav")], check=True, cwd=ROOT)
    got = read_wav(tmp_path / "rec" / "scribe.wav")[:, 0]
    offline = read_wav(tmp_path / "offline.wav")[:, 0]
    lat = make_array_pipeline(channels=4, sample_rate=16000, array=None).latency_samples
    assert len(got) == len(offline) == 10 * 16000
    # the live stream is the offline output delayed by the pipeline's latency, exactly
    assert np.array_equal(got[lat:], offline[: len(got) - lat])
    assert np.abs(got).max() < 32767  # the limiter holds: no clipping
    assert np.sqrt(np.mean(got.astype(float) ** 2)) > 300  # speech, not silence
    raw = read_wav(room)[:, 0]
    assert not np.array_equal(got[lat:lat + 16000], raw[:16000])  # processed, not passed
