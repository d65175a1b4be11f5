"""Capture through alsa-lib (pyalsaaudio) from an ALSA `file`-plugin PCM: a real device."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.chunker import Chunker

ROOT = Path(__file__).resolve().parents[2]

CAPTURE = r"""
import sys, numpy as np
from edge_agent.capture import AlsaCapture
cap = AlsaCapture("sl_test", sample_rate=16000, channels=int(sys.argv[2]), period_frames=320,
                  pace_realtime=sys.argv[4] == "1", speed=4.0)
cap.open()
blocks = []
n = 0
while n < int(sys.argv[3]):
    b = cap.read()
    blocks.append(b)
    n += len(b)
cap.close()
np.save(sys.stdout.buffer, np.concatenate(blocks))
"""


def _alsa_conf(tmp: Path, raw: Path) -> Path:
    conf = tmp / "asound.conf"
    conf.write_text(
        "</usr/share/alsa/alsa.conf>\n"
        f'pcm.sl_test {{\n type file\n slave.pcm "null"\n file "/dev/null"\n'
        f' infile "{raw}"\n format "raw"\n}}\n')
    return conf


def _capture(tmp: Path, x: np.ndarray, frames: int, pace: bool) -> tuple[np.ndarray, float]:
    raw = tmp / "in.raw"
    raw.write_bytes(x.astype("<i2").tobytes())
    conf = _alsa_conf(tmp, raw)
    t = time.monotonic()
    out = subprocess.run([sys.executable, "-c", CAPTURE, str(ROOT), str(x.shape[1]), str(frames),
                          "1" if pace else "0"],
                         capture_output=True, env={**os.environ, "ALSA_CONFIG_PATH": str(conf)},
                         check=True)
    import io

    return np.load(io.BytesIO(out.stdout)), time.monotonic() - t


@pytest.mark.parametrize("channels", [1, 4, 6])
def test_alsa_capture_returns_the_device_samples_exactly(tmp_path, channels):
    rng = np.random.default_rng(channels)
    x = rng.integers(-32768, 32767, size=(16000, channels), dtype=np.int16)
    got, _ = _capture(tmp_path, x, 16000, pace=False)
    assert got.shape[1] == channels
    assert np.array_equal(got[:16000], x)


def test_paced_capture_follows_the_sample_clock(tmp_path):
    x = np.zeros((8000, 2), dtype=np.int16)
    got, elapsed = _capture(tmp_path, x, 8000, pace=True)  # 0.5 s of audio at 4x speed
    assert len(got) >= 8000
    assert elapsed >= 0.5 / 4


def test_unknown_device_gives_an_actionable_error(tmp_path):
    code = ("from edge_agent.capture import AlsaCapture, CaptureError\n"
            "try:\n AlsaCapture('no_such_pcm', sample_rate=16000, channels=4,"
            " period_frames=320).open()\n"
            "except CaptureError as e: print(e)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True)
    assert "no_such_pcm" in out.stdout and "arecord -L" in out.stdout


def test_chunker_cuts_exact_chunks_and_stamps_capture_time():
    c = Chunker(sample_rate=16000, chunk_ms=40, start_us=1_000_000)
    x = np.arange(5000, dtype=np.int16)
    chunks = []
    for block in np.array_split(x, 7):
        chunks += c.push(block)
    last = c.flush()
    assert [len(ch.pcm) for ch in chunks] == [640] * 7
    assert last is not None and len(last.pcm) == 5000 - 7 * 640
    assert np.array_equal(np.concatenate([ch.pcm for ch in chunks] + [last.pcm]), x)
    assert chunks[1].capture_us == 1_000_000 + 40_000
    with pytest.raises(ValueError):
        Chunker(sample_rate=16000, chunk_ms=10, start_us=0)
    with pytest.raises(ValueError):
        Chunker(sample_rate=16000, chunk_ms=250, start_us=0)
